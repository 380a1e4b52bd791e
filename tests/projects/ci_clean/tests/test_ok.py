import pytest


def test_one():
    assert 1 + 1 == 2


@pytest.mark.parametrize("word", ["a", "bc"])
def test_lengths(word):
    assert len(word) in (1, 2)


class TestThings:
    def test_method(self):
        assert "x".upper() == "X"


@pytest.mark.skip(reason="skips count as passing")
def test_skipped():
    pass
