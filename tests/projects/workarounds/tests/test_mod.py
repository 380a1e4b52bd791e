import os

from pkg import mod

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mod():
    with open(os.path.join(ROOT, "workaround.log"), "a") as f:
        f.write("test %d\n" % os.getpid())
    with open(os.path.join(ROOT, "expected.txt")) as f:
        assert mod.VALUE == int(f.read())
