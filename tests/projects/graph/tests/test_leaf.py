from graphlog import mark
from pkg import leaf

mark(__name__)


def test_leaf(expected):
    assert leaf.X == expected["X"]
