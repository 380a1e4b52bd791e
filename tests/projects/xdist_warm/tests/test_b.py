import pytest


class TestScope:
    def test_one(self, module_resource):
        assert module_resource["made_in"]

    def test_two(self, module_resource):
        assert module_resource["made_in"]


@pytest.fixture(params=["x", "y", "z"])
def letter(request):
    return request.param


def test_letters(letter):
    assert letter in "xyz"


def test_errors_in_setup(missing_fixture):
    pass
