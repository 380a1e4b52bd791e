import pkg2


def test_names():
    assert (pkg2.A, pkg2.B) == (1, 2)


def test_submodules():
    assert (pkg2.a.A, pkg2.b.B) == (1, 2)
