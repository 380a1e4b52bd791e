"""Collected last: the module tests/e2e/test_spare.py edits to start a fresh
generation, so that every module imported before it keeps its addresses."""


def test_last():
    pass
