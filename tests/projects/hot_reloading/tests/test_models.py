import os
import sys

import mylib
from pkg.models import Model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_model():
    print("IN-ZYGOTE" if "pytest_zygote._zygote" in sys.modules else "IN-PROCESS")
    with open(os.path.join(ROOT, "workaround.log"), "a") as f:
        f.write("test %d\n" % os.getpid())
    with open(os.path.join(ROOT, "expected.txt")) as f:
        assert Model.VALUE == int(f.read())
    assert mylib.registry["Model"] is Model
