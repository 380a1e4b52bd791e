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


def test_predecessor_globs_cross_directories(pz):
    # pytest-hot-reloading's PYTEST_DAEMON_WATCH_GLOBS: fnmatch over the
    # whole absolute path, so '*' crosses '/': "./*.py" is every .py file
    # below the root, "./pkg/*.py" everything below pkg/ (our own globs would
    # mean pkg/ alone). A relative glob is taken from the root.
    root = pz.project("graph")
    os.makedirs(root / "pkg" / "sub")
    (root / "pkg" / "sub" / "deep.py").write_text("X = 1\n")
    env = dict(SETTLE, PYTEST_DAEMON_WATCH_GLOBS="./pkg/*.py")
    dirty = _dirty_after_touching(pz, root, env, ["tests/test_lazy.py", "pkg/sub/deep.py",
                                                  "pkg/leaf.py"])
    assert dirty == ["pkg/leaf.py", "pkg/sub/deep.py"]
    # the same glob with our meaning stops at pkg/
    env = dict(SETTLE, PYTEST_ZYGOTE_WATCH_GLOBS="pkg/*.py")
    dirty = _dirty_after_touching(pz, root, env, ["pkg/sub/deep.py", "pkg/leaf.py"])
    assert dirty == ["pkg/leaf.py"]


def test_predecessor_ignore_globs_add_to_ours(pz):
    # "./pkg/sub/*" (absolute after the root, as the predecessor made it)
    # ignores everything below pkg/sub, and a directory named alone means
    # everything in it; our default ignores (.venv/ ...) still hold.
    root = pz.project("graph")
    for d in ("pkg/sub/x", ".venv/lib", "other"):
        os.makedirs(root / d)
    for f in ("pkg/sub/x/a.py", ".venv/lib/v.py", "other/o.py"):
        (root / f).write_text("X = 1\n")
    env = dict(SETTLE, PYTEST_DAEMON_WATCH_GLOBS="%s/*.py" % root,
               PYTEST_DAEMON_IGNORE_WATCH_GLOBS="./pkg/sub/*:other")
    dirty = _dirty_after_touching(pz, root, env, ["pkg/sub/x/a.py", ".venv/lib/v.py",
                                                  "other/o.py", "pkg/mid.py"])
    assert dirty == ["pkg/mid.py"]
