from pkg import a, b


def test_a():
    assert a.VALUE == 1


def test_b():
    assert b.get() == 1
