import os

with open(os.environ.get("EXEC_LOG", os.devnull), "a") as _f:
    _f.write("tests/test_top\n")


def test_top():
    pass
