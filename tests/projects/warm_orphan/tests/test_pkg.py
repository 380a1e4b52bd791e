import pkg


def test_a():
    assert pkg.a.A == 1


def test_b():
    assert pkg.b.B == 2
