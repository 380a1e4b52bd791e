"""A project that never names pytest-zygote: the installed plugin may only
take over when a zygote runs for it (or a flag asks for one)."""

import sys


def test_where():
    print("IN-ZYGOTE" if "pytest_zygote._zygote" in sys.modules else "IN-PROCESS")
    print("PREFIX=%s" % sys.prefix)
