"""A warm-up the test can hold up (as tests/projects/warmgate/pkg/gate.py):
when the environment of `start` names GATE_MARKER, importing this module
appends the zygote's pid to that file and waits (at most 60 s) until the file
GATE_OPEN exists. Runs never wait: this module is imported once per zygote,
and the learning run the zygote forks (process title "pytest-zygote:
learning ...") does not wait either."""

import os
import time

with open("/proc/self/cmdline", "rb") as _f:
    _zygote = _f.read().startswith(b"pytest-zygote: zygote")
_marker = os.environ.get("GATE_MARKER")
if _marker and _zygote:
    with open(_marker, "a") as _f:
        _f.write("%d\n" % os.getpid())
    _gate = os.environ.get("GATE_OPEN")
    _deadline = time.monotonic() + 60
    while _gate and not os.path.exists(_gate) and time.monotonic() < _deadline:
        time.sleep(0.01)
