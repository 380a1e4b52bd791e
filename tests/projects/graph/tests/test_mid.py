from graphlog import mark
from pkg.mid import X

mark(__name__)


def test_mid(expected):
    assert X == expected["X"]
