from graphlog import mark
from pkg import top

mark(__name__)


def test_top(expected):
    assert top.TOP_X == expected["X"]
