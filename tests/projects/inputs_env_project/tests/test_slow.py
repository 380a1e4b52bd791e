import pytest

from pkg import settings


@pytest.mark.skipif(not settings.SLOW, reason="slow tests need RUN_SLOW=1")
def test_slow():
    assert False, "the slow test ran"


def test_fast():
    assert True
