import pytest

PKG_CALLS = []


@pytest.fixture(scope="package")
def package_res():
    PKG_CALLS.append(1)
    return "package"
