from pkg import mod


def test_value():
    assert mod.VALUE == 1
