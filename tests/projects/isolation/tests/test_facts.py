"""Facts about the process a test runs in, printed so that the e2e tests can
compare a zygote run with plain pytest. Run with -s."""
import os
import sys


def _status_field(name):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split()[1]
    return None


def test_print_facts():
    print("FACT argv=%r" % (sys.argv,))
    print("FACT executable=%r" % (sys.executable,))
    print("FACT prefix=%r" % (sys.prefix,))
    print("FACT path=%r" % (sys.path,))
    print("FACT cwd=%r" % (os.getcwd(),))
    print("FACT sigblk=%s" % _status_field("SigBlk"))
    print("FACT sigign=%s" % _status_field("SigIgn"))
    print("FACT sigcgt=%s" % _status_field("SigCgt"))
    print("FACT flags=%r" % (sys.flags,))
    print("FACT stdin_isatty=%r" % (sys.stdin.isatty(),))
    print("FACT pid=%d" % os.getpid())
    targets = []
    for fd in sorted(os.listdir("/proc/self/fd"), key=int):
        try:
            targets.append("%s:%s" % (fd, os.readlink("/proc/self/fd/" + fd)))
        except OSError:
            pass
    print("FACT fdtargets=%r" % (targets,))


def test_pythonpath_module():
    expected = os.environ.get("PZ_EXPECT_EXTRA")
    if expected is None:
        return
    import pz_extra_module

    assert pz_extra_module.VALUE == expected
