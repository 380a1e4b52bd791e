import sys

from pkg import checks


def test_report():
    # compared line by line with plain pytest (-s)
    print("INTERP hash=%d" % hash("abc"))
    print("INTERP flags dev_mode=%d optimize=%d hash_randomization=%d" % (
        sys.flags.dev_mode, sys.flags.optimize, sys.flags.hash_randomization))


def test_hash_randomization():
    assert sys.flags.hash_randomization  # PYTHONHASHSEED=0 turns it off


def test_not_dev_mode():
    assert not sys.flags.dev_mode  # PYTHONDEVMODE=1


def test_asserts_enabled():
    assert checks.asserts_enabled()  # PYTHONOPTIMIZE=1
