"""The entry points the zygote binary calls (src/zygote/pyembed.c).

C imports this module by name and calls warmup(root) once per generation
and settle() once it has said ready, learn(root, fd) in a learning run C
forked before Python started, spare_speculate() in a spare, and
child_run(argv, cwd, env) in each test child. The code lives in the
private package _zy (see _zy/__init__.py); this file stays, with its name,
because C and the installed-package checks look for
pytest_zygote/_zygote.py (src/common/paths.c). That this module is in
sys.modules tells code that it runs in a zygote or one of its children.
"""

from ._zy import state as _state
from ._zy.child import child_run
from ._zy.speedups import spare_speculate
from ._zy.warmup import learn, settle, warmup

__all__ = ["child_run", "collect_ms", "learn", "settle", "spare_speculate", "warmup"]


def collect_ms():
    """How long the run's collection took (C asks after the run)."""
    return _state.collect_ms


def __getattr__(name):
    """The state, under the names it had when this module held it: _root
    (the plugin's _in_zygote) and _workaround_pending (workaround.py) are
    read from other modules. Read-only: assign to _zy.state instead."""
    if name.startswith("_") and not name.startswith("__") and hasattr(_state, name[1:]):
        return getattr(_state, name[1:])
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
