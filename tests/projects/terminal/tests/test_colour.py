def test_ok():
    assert True


def test_bad():
    value = 1 + 1
    assert value == 3
