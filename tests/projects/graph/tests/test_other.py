from graphlog import mark
from pkg import other

mark(__name__)


def test_other(expected, other_y):
    assert other.Y == expected["Y"]
    assert other_y == expected["Y"]
