from graphlog import mark
from pkg import lazy

mark(__name__)

LAZY_X = lazy.value()


def test_lazy(expected):
    assert LAZY_X == expected["X"]
