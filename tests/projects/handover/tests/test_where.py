import sys


def test_runs():
    assert 1 + 1 == 2


def test_where(capsys):
    # In a zygote child the embedding module is loaded; in plain pytest it is not.
    print("IN-ZYGOTE" if "pytest_zygote._zygote" in sys.modules else "IN-PROCESS")
