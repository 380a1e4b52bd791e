# Not a test module: pytest does not rewrite its asserts, so -O removes them.


def asserts_enabled():
    try:
        assert False
    except AssertionError:
        return True
    return False
