import os

import pytest

# Every execution of this file is logged (pid, and whether a zygote child ran it).
with open(os.environ.get("EXEC_LOG", os.devnull), "a") as _f:
    _f.write("conftest %d\n" % os.getpid())

GREETING = "hello"


@pytest.fixture
def greeting():
    return GREETING
