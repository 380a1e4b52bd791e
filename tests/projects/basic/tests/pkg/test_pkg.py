from . import conftest


def test_package_one(package_res):
    assert package_res == "package"


def test_package_two(package_res):
    assert len(conftest.PKG_CALLS) == 1
