import pytest

from pkg import c


@pytest.fixture
def cname():
    return c.NAME
