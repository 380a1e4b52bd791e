"""Warm-up, in the zygote: import what runs import, and nothing else.

warmup() (called from C) stats the project, imports pytest, forks the
learning run and imports the modules it reports as it goes, then takes the
snapshot of project files the children compare against and the indexes
they use to reload (state). No pytest session and no project hook runs here.
"""

import gc
import os
import sys
import time

from . import state
from .child import find_openblas, limit_blas_threads
from .files import NOT_PROJECT, is_project_file, pytest_main_file, stat_key
from .inputs import outside_files, sort_inputs
from .learning import fork_learning_run, learning_run
from .recording import SideEffects, progress, record_atexit, record_imports
from .reload import close_pinned, index_importers
from .speedups import cache_run_independent_work, fill_run_caches, freeze_distributions


# Directories the project walk skips: third-party code, caches, VCS.
_WALK_SKIP = frozenset(NOT_PROJECT + (".git", ".hg", "__pycache__", "build", "dist",
                                      ".pytest_cache", ".mypy_cache", ".hypothesis"))


def _prewalk(root):
    """Before warm-up imports anything: stat every .py file of the project,
    and delete cached bytecode written before its source last changed.

    The stats are what the imported modules are compared against later: a
    file edited while warm-up runs, after it was imported, must look changed
    to the children. The bytecode matters because CPython and pytest accept a
    .pyc whose recorded whole-second mtime and size match the source: after
    a same-second, same-size edit a new generation would import old code. A
    cache file written before its source's last change (its ctime, which
    cannot be set back) may be such a one.
    """
    stats = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _WALK_SKIP]
        caches = None
        for f in filenames:
            if not f.endswith(".py"):
                continue
            path = os.path.join(dirpath, f)
            try:
                st = os.stat(path)
            except OSError:
                continue
            stats[path] = stat_key(st)
            if caches is None:
                try:
                    caches = os.listdir(os.path.join(dirpath, "__pycache__"))
                except OSError:
                    caches = ()
            stem = f[:-3] + "."
            for c in caches:
                if c.startswith(stem) and c.endswith(".pyc"):
                    cp = os.path.join(dirpath, "__pycache__", c)
                    try:
                        # <=: file times tick every few ms (files.older_than_source)
                        if os.stat(cp).st_mtime_ns <= st.st_ctime_ns:
                            os.unlink(cp)
                    except OSError:
                        pass
    return stats


def _take_snapshot(before):
    """Project modules now imported, with the stat their file had before
    warm-up began (or now, for a file the walk did not see)."""
    snap = {}
    for name, mod in list(sys.modules.items()):
        path = getattr(mod, "__file__", None)
        if not isinstance(path, str):
            continue
        path = os.path.abspath(path)
        if not is_project_file(path):
            continue
        st = before.get(path)
        if st is None:
            try:
                o = os.stat(path)
            except OSError:
                continue
            st = stat_key(o)
        snap[name] = (path,) + st
    return snap


def _enter_project(root):
    """Where the zygote and its learning run work from: the project's root
    as the cwd and first on sys.path (python -m pytest puts the cwd there),
    BLAS pools limited to one thread. Returns what limit_blas_threads
    set."""
    limited = limit_blas_threads()
    state.root = os.path.realpath(root)
    state.base_path = list(sys.path)
    os.chdir(state.root)
    sys.path.insert(0, state.root)
    sys.argv = [pytest_main_file()]
    return limited


def learn(root, w):
    """The learning run of a generation no other serves next to, forked by
    C before Python started (zygote.c, learn_early) and reporting through
    w. Never returns."""
    _enter_project(root)
    learning_run(w, prepare=_import_pytest)


def warmup(root, learn_fd=-1, learn_pid=0):
    """Import what runs import, and nothing else: no pytest session and no
    project hook runs here (docs/design.md, "Nothing warm-up did is visible").

    A forked child runs `pytest --collect-only` (the learning run) and
    reports, as it goes, the modules it imports that are not test modules or
    conftests; this process imports the same ones, in the same order, while
    the child goes on. learn_fd and learn_pid: that child, when C forked it
    before Python started (see learn), else -1 and 0. Returns a dict for the
    supervisor: files, modules, seconds, threads, status, project_files.
    """
    t0 = time.perf_counter()
    unrecord_atexit = record_atexit()
    limited = _enter_project(root)
    # A refresh (another generation serves meanwhile): the learning run
    # first, then the imports, so that it and this zygote's imports are
    # never in memory at once next to the serving generation's. It is
    # forked before pytest is imported, too: it imports pytest itself, and
    # the pages this process would have shared with it, then copied, are
    # not held twice (a refresh's peak on 1,000 tests: see benchmarks.md).
    #
    # A generation no other serves next to (the first), with a CPU to
    # spare, has it forked by C before Python started (learn), and imports
    # pytest next to it: that child is the critical path of warm-up, and
    # one forked from here paid for every page of the interpreter it
    # touched (copies and first accesses: 24 ms of a tiny project's import
    # of pytest on this project's VMs, 60 ms of its learning run when
    # forked after pytest was imported). Forked from here when C did not
    # (one CPU: no import next to it).
    #
    # Both before the walk of the project's files, which only this
    # process's imports must come after (the learning run reports names
    # and where they were found; the code it hands over is checked on its
    # own, see learning.py).
    learn_first = os.environ.pop("PYTEST_ZYGOTE_LEARN_FIRST", None) == "1" and not _replaying()
    forked = None
    if learn_fd >= 0:
        forked = (os.fdopen(learn_fd, "rb"), learn_pid)
    elif learn_first:
        forked = fork_learning_run(prepare=_import_pytest)
    progress("scanning project files")
    before = _prewalk(state.root)
    early = None
    if learn_first:
        progress("learning imports")
        early = _learn_first(*forked)
    elif forked is not None:
        early = (forked[0], 0, forked[1])
    progress("importing pytest")
    _import_pytest()
    # Here in every generation (the same order of allocations: the spare
    # prepares the pages the last generation's runs wrote), and while a
    # learning run forked above configures pytest. The sys.path is the one
    # plain pytest lists distributions with; listed again at the end if an
    # import changed it.
    freeze_distributions()
    progress("learning imports")
    status, learning_pid = _learn_and_import(early)
    unrecord_atexit()
    for name in limited:
        if os.environ.get(name) == "1":
            del os.environ[name]
    progress("freezing")
    find_openblas()
    _drop_orphans()
    freeze_distributions()
    state.snapshot = _take_snapshot(before)
    index_importers()
    sort_inputs()
    close_pinned()
    # Keep the warnings of modules this process holds (a run that purges
    # one imports it again and hears its warnings itself) whose category it
    # has too.
    kept = []
    for when, path, module, text, cat_module, cat_name, filename, lineno in state.warm_warnings:
        category = sys.modules.get(cat_module)
        for part in cat_name.split("."):
            category = getattr(category, part, None)
        if module in sys.modules and isinstance(category, type) and \
                issubclass(category, Warning):
            kept.append((when, path, module, text, category, filename, lineno))
    state.warm_warnings[:] = kept
    pp = os.environ.get("PYTHONPATH", "")
    state.zygote_pythonpath = [os.path.abspath(p) for p in pp.split(os.pathsep) if p]
    if learning_pid:
        os.waitpid(learning_pid, 0)
    try:
        threads = len(os.listdir("/proc/self/task"))
    except OSError:
        threads = 1
    return {
        "files": outside_files(),
        "modules": len(sys.modules),
        "seconds": time.perf_counter() - t0,
        "threads": threads,
        "status": status,
        "project_files": len(state.snapshot),
    }


def settle():
    """The end of warm-up, after the supervisor heard ready and before the
    zygote's first fork (zygote.c): the collection of what warm-up's
    imports left, then gc.freeze(), so that a test's gc.collect() does not
    copy the zygote's heap. Here rather than before ready: it is the
    longest step after the learning run's end (4.5 ms on tiny, 64-73 ms on
    heavy), and `start` does not wait for it; a run that comes at once
    does, as it would have waited for start.

    Collections are off while the learning run's modules are imported, so
    the young generations hold all they allocated: collecting those
    (import-time cycles, closed before any fork, as a plain pytest's
    collections would) takes a quarter of a full collection, which found
    nothing more on the bench projects (tiny: 4.5 against 18 ms)."""
    gc.collect(1)
    gc.freeze()


def _import_pytest():
    """pytest, and the caches of work no run redoes (speedups)."""
    import pytest  # noqa: F401

    cache_run_independent_work()


def _replaying():
    """Whether this generation replays the last learning run's records
    (PYTEST_ZYGOTE_REPLAY, see _learn_and_import) instead of forking one."""
    return os.environ.get("PYTEST_ZYGOTE_REPLAY") == "1" and \
        bool(os.environ.get("PYTEST_ZYGOTE_LEARNED"))


def _learn_and_import(early=None):
    """Fork the learning run and import what it reports as it goes, with
    the import recorder and the side-effect recorder on. Returns the
    warm-up status ("ok", or what went wrong, in words) and the pid of a
    learning run left for the caller to reap (its last record read), or 0.

    What it reported is kept in the file PYTEST_ZYGOTE_LEARNED names; a
    generation the supervisor starts only for a new hash seed, with no
    change since (PYTEST_ZYGOTE_REPLAY=1), reads that instead of running
    it again. Replayed records are checked as fresh ones are: a module is
    imported only from the file it was found in, rewritten code is used
    only for a file with the same stat, a data file's stat is compared.

    early: what _learn_first returned for a learning run forked (and over)
    before pytest was imported, on a refresh; its records are read from
    that memfd as from the pipe."""
    import marshal
    import pickle
    import struct
    import warnings

    learned = os.environ.pop("PYTEST_ZYGOTE_LEARNED", None)
    replay = os.environ.pop("PYTEST_ZYGOTE_REPLAY", None) == "1" and learned
    f = tee = pid = None
    wstatus = 0
    replayed = False
    if early is not None:
        f, wstatus, pid = early
    elif replay:
        try:
            f = open(learned, "rb")
        except OSError:
            f = None
        else:
            replayed = True
            # (into the server's log)
            print("pytest-zygote: generation for a new hash seed: replayed the learning run "
                  "of the last generation", flush=True)
    if f is None:
        f, pid = fork_learning_run()
    if learned and not replayed:
        tee_path = "%s.%d" % (learned, os.getpid())
        try:
            tee = os.fdopen(os.open(tee_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC |
                                    os.O_CLOEXEC, 0o600), "wb")
        except OSError:
            tee = None
    # No collections while importing: what they free depends on timing, and
    # the next generation should lay out its heap as this one (the spare
    # prepares the pages the last generation's runs wrote).
    gc.disable()
    unrecord = record_imports()
    side_effects = SideEffects()
    status = "ok"
    ended = False
    hook = None
    pending = []  # modules reported before the ini values the hook needs
    plugins = []  # what the learning run registered as plugins
    state.early.update(sys.modules)  # pytest's own imports
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the learning run's to report
            while True:
                head = f.read(4)
                if len(head) < 4:
                    break
                data = f.read(struct.unpack("<I", head)[0])
                if tee is not None:
                    try:
                        tee.write(head + data)
                    except OSError:
                        # A full runtime directory costs the next generation
                        # its replay, not this one its warm-up.
                        tee = _drop_tee(tee, tee_path)
                try:
                    rec = pickle.loads(data)
                except Exception:  # noqa: BLE001 - a warning class this process lacks
                    continue
                kind = rec[0]
                if kind == "m":
                    pending.append(rec[1:])
                elif kind == "f":
                    state.data_reads.setdefault(rec[2], [rec[3], set()])[1].add(rec[1])
                elif kind == "w":
                    state.warm_warnings.append(rec[1:])
                elif kind == "c":
                    try:
                        state.rewritten_code[rec[1]] = (rec[2], marshal.loads(rec[3]))
                    except (ValueError, EOFError, TypeError):
                        pass
                elif kind == "p":
                    # Now, while the learning run goes on, if this process
                    # has the plugin's module already; else at the end.
                    if rec[2] in sys.modules:
                        fill_run_caches((rec[1:],))
                    else:
                        plugins.append(rec[1:])
                elif kind == "e":
                    for importer, imported in rec[1].items():
                        state.edges.setdefault(importer, set()).update(imported)
                elif kind == "ini":
                    state.warm_addopts[:] = rec[1].get("addopts", [])
                    hook = _zygote_rewrite_hook(rec[1])
                    sys.meta_path.insert(0, hook)
                elif kind == "end":
                    ended = True
                    if rec[1] not in (0, 5):
                        status = "collection exit code %d" % rec[1]
                if pending and (hook is not None or kind == "end"):
                    if hook is None:
                        hook = _zygote_rewrite_hook({})
                        sys.meta_path.insert(0, hook)
                    for name, origin, rewritten in pending:
                        _import_learned(name, origin, rewritten, hook)
                    pending.clear()
                if len(sys.modules) >= state.progress_due[0]:
                    progress()
                if ended:
                    # The last record: the learning run exits while this
                    # process goes on (reaped at the end of warm-up).
                    break
    finally:
        f.close()
        if hook is not None:
            sys.meta_path.remove(hook)
            state.rewrite_marks[:] = sorted(hook.marked_later())
        side_effects.stop()
        unrecord()
        if pid and not ended:
            wstatus = os.waitpid(pid, 0)[1]
        if tee is not None:
            try:
                tee.close()
            except OSError:
                tee = _drop_tee(tee, tee_path)
        if tee is not None:
            try:
                if ended and status == "ok":
                    os.replace(tee_path, learned)
                else:
                    os.unlink(tee_path)
            except OSError:
                pass
    plugins.append(("module", "_pytest.hookspec", None))
    fill_run_caches(dict.fromkeys(plugins))
    if os.WIFSIGNALED(wstatus):
        status = "learning run killed by signal %d" % os.WTERMSIG(wstatus)
    elif os.WEXITSTATUS(wstatus) == 70 and status == "ok":
        status = "learning run failed"
    return status, pid if ended else 0


def _learn_first(f, pid):
    """Copy what the learning run reports into a memfd until it exits;
    returns (that memfd as a file, its wait status, 0). Its records wait
    there, outside the heap: read from there as from the pipe, this
    generation lays out its heap as one that read them as they came (the
    pages the spare prepares)."""
    fd = os.memfd_create("learned", os.MFD_CLOEXEC)
    src = f.fileno()
    # splice: no buffer of ours on the heap
    while os.splice(src, fd, 1 << 20):
        pass
    f.close()
    wstatus = os.waitpid(pid, 0)[1]
    os.lseek(fd, 0, os.SEEK_SET)
    return os.fdopen(fd, "rb"), wstatus, 0


def _drop_tee(tee, path):
    """Give up the copy of the learning run (a write failed): close and remove
    it, returning None."""
    try:
        tee.close()
    except OSError:
        pass
    try:
        os.unlink(path)
    except OSError:
        pass
    return None


def _import_learned(name, origin, rewritten, hook):
    """Import one module the learning run imported, if this process finds
    it where the run did (a conftest may have put its directory on sys.path
    there). A module whose import fails here (it needs what a conftest or a
    plugin's configuration sets up) is left to the runs."""
    import importlib
    import importlib.util

    if name in sys.modules:
        return
    parent = name.rpartition(".")[0]
    if parent and parent not in sys.modules:
        return
    if rewritten:
        hook.mark_learned(name)
    try:
        spec = importlib.util.find_spec(name)
    except BaseException:  # noqa: BLE001 - whatever the finders raise
        return
    if spec is None or spec.origin != origin:
        return
    try:
        importlib.import_module(name)
    except BaseException:  # noqa: BLE001 - nothing an import does may end the zygote
        sys.modules.pop(name, None)


def _drop_orphans():
    """Project submodules whose package is not imported (its __init__ failed
    after importing them): a run that imports the package must import them
    anew, or it would find them in sys.modules but not as attributes.
    Third-party aliases without a parent (vendoring tricks) stay."""
    changed = True
    while changed:
        changed = False
        for name, mod in list(sys.modules.items()):
            parent = name.rpartition(".")[0]
            if parent and parent not in sys.modules and \
                    is_project_file(os.path.abspath(getattr(mod, "__file__", None) or "")):
                del sys.modules[name]
                changed = True


def _zygote_rewrite_hook(ini):
    """pytest's assertion-rewriting import hook, for the modules a cold run
    imports through it (plugin modules, pytest_plugins, modules named in
    register_assert_rewrite, test-named helpers): they are imported here as
    pytest would, so they behave the same and pytest does not warn that they
    were imported before it could rewrite them. pytest's own class; the
    config it asks for is the few ini values the learning run sent. Names a
    module marks while it is imported here (register_assert_rewrite) are
    kept for the children's hooks (state.rewrite_marks)."""
    from _pytest.assertion.rewrite import AssertionRewritingHook

    class Hook(AssertionRewritingHook):
        learned = set()

        def mark_learned(self, name):
            self.learned.add(name)
            self.mark_rewrite(name)

        def mark_rewrite(self, *names):
            # Without pytest's "already imported" warning: no session here.
            self._must_rewrite.update(names)
            self._marked_for_rewrite_cache.clear()

        def marked_later(self):
            return self._must_rewrite - self.learned

    return Hook(_RewriteConfig(ini))


class _RewriteConfig:
    """The part of a pytest Config the rewriting hook reads."""

    def __init__(self, ini):
        from _pytest.assertion import assertstate_key
        from _pytest.stash import Stash

        class State:
            hook = None

            @staticmethod
            def trace(*args):
                pass

        self.ini = {"python_files": ["test_*.py", "*_test.py"],
                    "enable_assertion_pass_hook": False}
        self.ini.update(ini)
        self.stash = Stash()
        self.stash[assertstate_key] = State()

    def getini(self, name):
        return self.ini[name]
