"""Each test first checks that the state it mutates is pristine, then mutates
it. Run twice in a row: a second run that fails means a mutation leaked."""
import atexit
import logging
import os
import random
import signal
import sys
import types

from app import state

LOCAL_LIST = []


def _handler(signum, frame):
    pass


def test_module_globals():
    assert state.COUNTER == 0
    assert state.REGISTRY == []
    assert LOCAL_LIST == []
    state.COUNTER += 41
    state.REGISTRY.append("leak")
    LOCAL_LIST.append("leak")


def test_sys_modules():
    assert "pz_injected_module" not in sys.modules
    assert not hasattr(state, "pz_injected_attr")
    sys.modules["pz_injected_module"] = types.ModuleType("pz_injected_module")
    state.pz_injected_attr = True


def test_environ():
    assert "PZ_LEAKED_VAR" not in os.environ
    assert "PZ_SERVER_ONLY" not in os.environ
    os.environ["PZ_LEAKED_VAR"] = "1"
    os.putenv("PZ_LEAKED_PUTENV", "1")


def test_environ_from_client():
    expected = os.environ.get("PZ_EXPECT_CLIENT_VAR")
    if expected is not None:
        assert os.environ.get("PZ_CLIENT_VAR") == expected


def test_signal_handlers():
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == set()
    signal.signal(signal.SIGUSR1, _handler)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGWINCH])


def test_sys_path():
    assert "/pz-leaked-path" not in sys.path
    sys.path.append("/pz-leaked-path")
    sys.path_importer_cache["/pz-leaked-path"] = None


def test_logging_config():
    root = logging.getLogger()
    assert not any(getattr(h, "pz_leak", False) for h in root.handlers)
    assert root.level != 7
    assert logging.getLogger("pz.app").level == logging.NOTSET
    handler = logging.NullHandler()
    handler.pz_leak = True
    root.addHandler(handler)
    root.setLevel(7)
    logging.getLogger("pz.app").setLevel(logging.CRITICAL)


def test_atexit_registered_during_run():
    path = os.environ.get("PZ_RUN_ATEXIT_FILE")
    if path:
        def _write(p=path, text=os.environ.get("PZ_RUN_ID", "")):
            with open(p, "w") as f:
                f.write(text)

        atexit.register(_write)


def test_random_values():
    print("RANDOM %r %d" % (random.random(), random.getrandbits(64)))


def test_cwd():
    expected = os.environ.get("PZ_EXPECT_CWD")
    if expected is not None:
        assert os.getcwd() == expected
    os.chdir("/")


def test_records_that_it_ran():
    # Test code runs only in test children, never at the zygote's warm-up.
    path = os.environ.get("PZ_TEST_RAN_LOG")
    if path:
        with open(path, "a") as f:
            f.write("%d\n" % os.getpid())
