from pkg.util import d


def test_d():
    assert d.WORD == "d"


def test_d_a():
    assert d.A == 1
