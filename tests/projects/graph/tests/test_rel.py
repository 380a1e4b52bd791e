from graphlog import mark
from pkg import rel

mark(__name__)


def test_rel(expected):
    assert rel.REL_X == expected["X"]
