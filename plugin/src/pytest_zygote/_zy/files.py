"""Which files are the project's, and which version of a file this is.

Small helpers every other module of the package uses, for the zygote and for
its children. Pure functions of the file system and of state.root: no
imports of the project, no state of their own.
"""

import os

from . import state


# Directories under the project root that hold third-party code, not the project.
NOT_PROJECT = ("site-packages", "dist-packages", ".venv", "venv", ".tox", ".nox", "node_modules")


def is_project_file(path):
    """Whether an absolute path is the project's: under the root, and not in
    a directory of third-party code there (NOT_PROJECT)."""
    if not path or not state.root:
        return False
    if not (path == state.root or path.startswith(state.root + os.sep)):
        return False
    parts = path[len(state.root):].split(os.sep)
    return not any(p in NOT_PROJECT for p in parts)


# Files a module's import reads as code, not as data.
CODE_SUFFIXES = (".py", ".pyc", ".pyi", ".so", ".pth", ".pyd")


def stat_key(st):
    """What identifies a version of a file: mtime (ns), size, inode, and the
    inode change time, which no tool can set back (os.utime, cp -p, tar and
    rsync -t can restore an old mtime onto new contents)."""
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)


def pytest_main_file():
    # sys.argv[0] under `python -m pytest` is pytest/__main__.py; argparse
    # uses its basename in usage lines, so match it. Found without
    # importing pytest (find_spec of a submodule imports its package): a
    # refresh's learning run is forked before the zygote imports pytest.
    import importlib.util

    spec = importlib.util.find_spec("pytest")
    for d in (spec.submodule_search_locations or []) if spec else []:
        main = os.path.join(d, "__main__.py")
        if os.path.isfile(main):
            return main
    return "pytest"


def older_than_source(pyc, source):
    """Whether a bytecode cache may have been written before its source last
    changed (the source's inode change time, which no tool can set back).
    File times come from a clock that ticks every few milliseconds, so a
    cache written in the same tick as the change counts as older."""
    try:
        return os.stat(pyc).st_mtime_ns <= os.stat(source).st_ctime_ns
    except OSError:
        return False
