"""The learning run: a fork of the warming zygote that runs
`pytest --collect-only` and reports over a pipe what it imports, reads and
rewrites, and the warnings those imports raise (docs/design.md, "Warm-up:
the learning run"). It runs in its own process, which exits when it is done:
what it changes never reaches the zygote except through the pipe.
"""

import os
import stat
import sys
import time

from . import state
from .files import (CODE_SUFFIXES, is_project_file, older_than_source, pytest_main_file,
                    stat_key)
from .recording import record_imports


def fork_learning_run(prepare=None):
    """Fork the learning run; returns (the file to read its records from,
    its pid). prepare() runs first in the child: what the zygote would have
    done before forking it (importing pytest), when it forks it earlier."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the learning run
        try:
            os.close(r)
            try:
                import _pytest_zygote_c
            except ImportError:  # not in the zygote binary
                pass
            else:
                _pytest_zygote_c.learning_child()
        except BaseException:  # noqa: BLE001 - never back into the zygote's code
            os._exit(70)
        learning_run(w, prepare)
    os.close(w)
    return os.fdopen(r, "rb"), pid


def learning_run(w, prepare=None):
    """The learning run's process from here on, reporting through w: a
    child forked from Python (fork_learning_run) or from C before Python
    started (warmup.learn). Never
    returns."""
    code = 70
    try:
        state.progress_phase[0] = None
        if prepare is not None:
            prepare()
        code = _learning_run(w)
    finally:
        os._exit(code)


class CollectBudget:
    """A plugin for the learning and practice runs: once collection has
    taken PYTEST_ZYGOTE_LEARN_SECONDS (default 5), it takes no new files.
    Runs import what lies beyond themselves, so a suite whose collection
    takes minutes still starts in seconds."""

    deadline = None

    def __init__(self, env=None):
        self.budget = 5.0
        try:
            self.budget = float((env or os.environ).get("PYTEST_ZYGOTE_LEARN_SECONDS", 5.0))
        except ValueError:
            pass

    def pytest_collection(self, session):
        self.deadline = time.monotonic() + self.budget

    @staticmethod
    def _over(deadline):
        return deadline is not None and time.monotonic() > deadline

    def pytest_ignore_collect(self, collection_path, config):
        return True if self._over(self.deadline) else None

    def pytest_make_collect_report(self, collector):
        # pytest lists the files first and imports them afterwards: past
        # the deadline, a module is reported empty instead of imported.
        if self._over(self.deadline) and collector.parent is not None:
            from _pytest.reports import CollectReport

            return CollectReport(collector.nodeid, "passed", None, [])
        return None


_REPORTING_IMPORT = """
def reporting_import(*args, **kwargs):
    module = original_import(*args, **kwargs)
    if len(modules) >= due[0]:
        due[0] = len(modules) + 8
        scan()
    return module
"""


def _learning_run(w):
    """The forked learning run: `pytest --collect-only`, reporting through
    w each module it imports (other than test modules and conftests) with
    where it came from and whether pytest rewrote it, the warnings those
    imports raised, and the few ini values the zygote needs. Collection
    stops taking new files after PYTEST_ZYGOTE_LEARN_SECONDS (default 5):
    what runs import beyond that, they import themselves."""
    import pickle
    import struct
    import warnings

    import pytest
    import _pytest.assertion.rewrite as rewrite
    import _pytest.config
    import _pytest.pathlib
    import _pytest.python

    # Its output goes where the zygote's does: the server's log.
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.environ.pop("PYTEST_ADDOPTS", None)  # the zygote's own; runs bring theirs
    rewriting_hook = rewrite.AssertionRewritingHook
    # Imports that run here and not in the zygote (inside functions that
    # test modules call at import) are edges of the reverse closure too.
    state.edges.clear()
    record_imports()
    out = os.fdopen(w, "wb")
    test_files = set()
    seen = set(sys.modules)
    held = set()  # test modules: never reported

    def send(rec):
        try:
            data = pickle.dumps(rec)
        except Exception:  # noqa: BLE001 - a warning that does not pickle
            return
        out.write(struct.pack("<I", len(data)) + data)

    def scan():
        for name, mod in list(sys.modules.items()):
            if name in seen:
                continue
            seen.add(name)
            spec = getattr(mod, "__spec__", None)
            origin = getattr(spec, "origin", None)
            if origin in test_files or name == "conftest" or name.endswith(".conftest"):
                held.add(name)
                continue
            send(("m", name, origin, isinstance(getattr(mod, "__loader__", None), rewriting_hook)))
        out.flush()

    original = _pytest.pathlib.import_path

    def import_path(path, *args, **kwargs):
        test_files.add(str(path))
        scan()  # what came before belongs to others
        return original(path, *args, **kwargs)

    import builtins
    import io

    original_open = io.open

    def noting_open(file, mode="r", *args, **kwargs):
        """Project files other than code that a module's import opens for
        reading (a configuration read at import): they are inputs of that
        module, as its source is. (An open() wrapper, not an audit hook:
        those see every attribute pytest's collection inspects.)"""
        try:
            note_open(file, mode)
        except Exception:  # noqa: BLE001 - never in the way of an open
            pass
        return original_open(file, mode, *args, **kwargs)

    def note_open(path, mode):
        if isinstance(path, os.PathLike):
            path = os.fspath(path)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if isinstance(path, str) and isinstance(mode, str) and \
                not any(c in mode for c in "wax+"):
            path = os.path.abspath(path)
            if path.endswith(CODE_SUFFIXES) or not is_project_file(path):
                return
            f = sys._getframe(2)
            while f is not None and f.f_code.co_name != "<module>":
                f = f.f_back
            if f is None or f.f_globals.get("__file__") in test_files or \
                    f.f_globals.get("__name__") == "__main__":
                return
            name = f.f_globals.get("__name__")
            st = os.stat(path)
            if isinstance(name, str) and stat.S_ISREG(st.st_mode):
                send(("f", name, path, stat_key(st)))

    builtins.open = io.open = noting_open  # this process ends with the learning run

    for module in (_pytest.python, _pytest.config):
        module.import_path = import_path

    # The code pytest's rewriter made or read for each test module and
    # conftest, for the children (see speedups.refuse_stale_bytecode).
    import marshal

    read_pyc, rewrite_test = rewrite._read_pyc, rewrite._rewrite_test

    def keep(path, key, co):
        try:
            send(("c", str(path), key, marshal.dumps(co)))
        except (ValueError, OSError):
            pass

    def reading_pyc(source, pyc, trace=lambda x: None):
        # The file's stat before pytest reads it: an edit in between then
        # makes the key miss, never labels old code with the new file's key.
        try:
            key = stat_key(os.stat(source))
        except OSError:
            key = None
        # A cache pytest would accept after a same-second, same-size edit
        # made while this run goes on: rewrite the file instead.
        if older_than_source(pyc, source):
            return None
        co = read_pyc(source, pyc, trace)
        if co is not None and key is not None:
            keep(source, key, co)
        return co

    def rewriting(fn, config):
        st, co = rewrite_test(fn, config)
        keep(fn, stat_key(st), co)
        return st, co

    rewrite._read_pyc, rewrite._rewrite_test = reading_pyc, rewriting

    # Report every 8 new modules while imports happen, so the zygote
    # imports a module while this run is still busy with the next ones. By
    # count, not by time: the stream is then the same from one generation
    # to the next, and so is the order of the zygote's allocations (the
    # spare prepares the pages the last generation's runs wrote, at the
    # same addresses).

    # Compiled under an importlib._bootstrap name, as the recorder is (see
    # record_imports): warnings must not point at this wrapper.
    ns = {"original_import": builtins.__import__, "modules": sys.modules,
          "scan": scan, "due": [0]}
    exec(compile(_REPORTING_IMPORT, "<pytest_zygote importlib._bootstrap reporter>", "exec"), ns)
    builtins.__import__ = ns["reporting_import"]

    def module_frame():
        """The module whose top-level code raised the warning being shown
        (the innermost frame that executes a module body), or None."""
        f = sys._getframe(2)
        while f is not None:
            if f.f_code.co_name == "<module>":
                return f.f_globals.get("__name__"), f.f_globals.get("__file__")
            f = f.f_back
        return None, None

    def importing_test_file():
        f = sys._getframe(2)
        while f is not None:
            if f.f_code.co_name == "<module>" and f.f_globals.get("__file__") in test_files:
                return f.f_globals["__file__"]
            f = f.f_back
        return None

    show = warnings._showwarnmsg

    def tagging_show(msg):
        try:
            name, path = module_frame()
            if name is not None and path not in test_files and \
                    os.path.basename(path or "") != "conftest.py":
                msg._pytest_zygote = (name, importing_test_file())
        except Exception:  # noqa: BLE001
            pass
        show(msg)

    warnings._showwarnmsg = tagging_show

    # The ini values as soon as pytest has read them, before it imports the
    # installed plugins: the zygote waits for them to import those.
    consider_importhook = _pytest.config.Config._consider_importhook

    def considering_importhook(config, args):
        consider_importhook(config, args)
        try:
            ini = {k: config.getini(k) for k in
                   ("addopts", "python_files", "enable_assertion_pass_hook")}
        except Exception:  # noqa: BLE001 - the zygote then imports with pytest's defaults
            ini = {}
        send(("ini", ini))
        scan()

    _pytest.config.Config._consider_importhook = considering_importhook

    class Learner(CollectBudget):

        def pytest_plugin_registered(self, plugin, manager):
            if isinstance(plugin, type(sys)):
                send(("p", "module", plugin.__name__, None))
            elif not isinstance(plugin, type):
                cls = type(plugin)
                send(("p", "class", cls.__module__, cls.__qualname__))

        def pytest_warning_recorded(self, warning_message, when, nodeid, location):
            tag = getattr(warning_message, "_pytest_zygote", None)
            if tag is None or tag[0] in held:
                return
            m = warning_message
            # The category by name: unpickling it would import its module
            # into the zygote, and it may be a test module.
            cat = m.category
            send(("w", when, tag[1], tag[0], str(m.message), cat.__module__, cat.__qualname__,
                  m.filename, m.lineno))

    sys.argv = [pytest_main_file()]
    rc = 1
    try:
        rc = int(pytest.main(["--collect-only", "-qq", "-p", "no:cacheprovider"],
                             plugins=[Learner()]))
    except BaseException:  # noqa: BLE001 - what was learned is still good
        pass
    try:
        scan()
        send(("e", {k: v for k, v in state.edges.items() if k not in held}))
        send(("end", rc))
        out.flush()
    except Exception:  # noqa: BLE001
        return 70
    return 0
