def test_syntax_error():
    x = (1,
    assert x


def test_other():
    pass
