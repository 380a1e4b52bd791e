"""A warm-up the tests can hold up.

When the zygote's environment (that of `pytest-zygote start`) names
WARMGATE_MARKER, importing this module in the zygote (not in the learning run
it forks, whose process title says "learning") appends the process id to that file
and then waits (at most 60 s) until the file WARMGATE_GATE exists. The root
conftest imports pkg.val first and then this module, so an edit made while a
warm-up waits here lands after that warm-up imported pkg.val.

It is a module of its own, not code in the conftest, because pytest executes
a conftest.py outside a package again in every session (the zygote's
practice run and every test child included); this module runs once per
zygote. Runs (the clients' environments) and plain pytest never wait.
"""

import os
import time

with open("/proc/self/cmdline", "rb") as _f:
    _zygote = _f.read().startswith(b"pytest-zygote: zygote")
_marker = os.environ.get("WARMGATE_MARKER")
if _marker and _zygote:
    with open(_marker, "a") as _f:
        _f.write("%d\n" % os.getpid())
    _gate = os.environ.get("WARMGATE_GATE")
    _deadline = time.monotonic() + 60
    while _gate and not os.path.exists(_gate) and time.monotonic() < _deadline:
        time.sleep(0.01)
