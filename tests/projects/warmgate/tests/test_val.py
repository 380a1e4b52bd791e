import os

from pkg import val

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_val():
    with open(os.path.join(ROOT, "expected.txt")) as f:
        assert val.VALUE == int(f.read())
