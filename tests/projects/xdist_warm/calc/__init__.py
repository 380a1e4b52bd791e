"""A project module: records which process imported it, so a test can tell a
warm worker (imported by the zygote, before the worker existed) from a cold one."""
import os

IMPORTED_BY = os.getpid()


def add(a, b):
    return a + b
