"""PZ_TARGET names a zygote that is not the one this run came from; the
sandbox must refuse to signal it (signal 0: nothing is sent either way)."""

import os


def test_the_other_generation_cannot_be_signalled():
    pid = int(os.environ["PZ_TARGET"])
    try:
        os.kill(pid, 0)
    except PermissionError:
        return
    raise AssertionError("signal 0 to zygote %d was allowed" % pid)
