"""Watch and ignore globs are configurable (PYTEST_ZYGOTE_WATCH_GLOBS and
PYTEST_ZYGOTE_IGNORE_GLOBS in the environment of `start`, colon-separated):
status --json lists as changed exactly the files they select."""

import os

import pz_util

SETTLE = {"PYTEST_ZYGOTE_SETTLE_MS": "3600000"}  # keep the dirty list: no refresh


def _touch(path):
    with open(path, "a") as f:
        f.write("\n# touched\n")


def _dirty_after_touching(pz, root, env, paths):
    srv = pz.start(root, env=env)
    for p in paths:
        _touch(os.path.join(root, p))
    want = None

    def settled():
        nonlocal want
        want = srv.status()
        return want["dirty_count"] > 0
    assert pz_util.wait_until(settled, timeout=10), want
    # every event of this burst is in by now: one more status to be sure
    st = srv.status()
    srv.stop()
    return sorted(os.path.relpath(p, root) for p in st["dirty"])


def test_default_globs_watch_every_python_file(pz):
    root = pz.project("graph")
    dirty = _dirty_after_touching(pz, root, SETTLE, ["pkg/leaf.py", "tests/test_lazy.py"])
    assert dirty == ["pkg/leaf.py", "tests/test_lazy.py"]


def test_watch_globs_select_files(pz):
    root = pz.project("graph")
    env = dict(SETTLE, PYTEST_ZYGOTE_WATCH_GLOBS="pkg/*.py")
    dirty = _dirty_after_touching(pz, root, env, ["tests/test_lazy.py", "pkg/leaf.py"])
    assert dirty == ["pkg/leaf.py"]


def test_ignore_globs_replace_the_defaults(pz):
    root = pz.project("graph")
    env = dict(SETTLE, PYTEST_ZYGOTE_IGNORE_GLOBS="pkg/")
    dirty = _dirty_after_touching(pz, root, env, ["pkg/leaf.py", "tests/test_lazy.py"])
    assert dirty == ["tests/test_lazy.py"]
