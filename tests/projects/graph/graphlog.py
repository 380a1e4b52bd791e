"""Import-time counter: every module of this project appends "NAME PID" to
import.log (next to this file) when it is executed. Tests append "RUN PID",
so a test can tell the imports of its run from those of warm-ups and of the
zygote's practice run."""

import os

LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "import.log")


def mark(name):
    with open(LOG, "a") as f:
        f.write("%s %d\n" % (name, os.getpid()))
