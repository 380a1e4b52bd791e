# Temporary directories that live until the interpreter exits: the
# TemporaryDirectory finalizer removes them at exit, as in plain pytest.
import os
import tempfile

MODULE_DIR = tempfile.TemporaryDirectory(prefix="warm-module-")
KEPT = []


def _log(path):
    with open(os.environ.get("TMPDIR_LOG", os.devnull), "a") as f:
        f.write(path + "\n")


_log(MODULE_DIR.name)


def test_module_dir():
    assert os.path.isdir(MODULE_DIR.name)


def test_dir_kept_by_a_test():
    d = tempfile.TemporaryDirectory(prefix="warm-test-")
    KEPT.append(d)
    _log(d.name)
    assert os.path.isdir(d.name)
