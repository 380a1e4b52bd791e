import builtins
import importlib

import _pytest.config
import _pytest.python


def test_warm_up_instruments_nothing_a_run_sees():
    # warm-up wraps these to record imports; a run must get the originals back
    assert type(builtins.__import__).__name__ == "builtin_function_or_method"
    assert importlib.import_module.__module__ == "importlib"
    assert _pytest.python.import_path.__module__ == "_pytest.pathlib"
    assert _pytest.config.import_path.__module__ == "_pytest.pathlib"
