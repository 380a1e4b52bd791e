"""Imported only inside a test, never at collection."""


def double(x):
    return 2 * x


def unused():
    return None
