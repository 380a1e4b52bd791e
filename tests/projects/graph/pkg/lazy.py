from graphlog import mark

mark(__name__)


def value():
    # An import inside a function; tests/test_lazy.py calls it at import time,
    # so it runs at warm-up.
    from pkg import leaf

    return leaf.X
