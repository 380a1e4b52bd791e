"""Code that runs inside the zygote (warm-up) and inside each test child.

Called from C (src/zygote/pyembed.c) only. It must import nothing else from this
package, and it must not leave state behind in the zygote that a run could
observe: everything a child changes dies with the child.
"""

import gc
import io
import os
import pathlib
import stat
import sys
import time

# Directories under the project root that hold third-party code, not the project.
_NOT_PROJECT = ("site-packages", "dist-packages", ".venv", "venv", ".tox", ".nox", "node_modules")

_root = None
_snapshot = {}  # module name -> (path, mtime_ns, size, ino)
_base_path = []  # sys.path of the interpreter before warm-up touched it
_zygote_pythonpath = []  # entries the zygote's own PYTHONPATH added
_ru0 = None  # resource usage when this child's run began
_reloaded = 0  # modules this child purged for re-import
_warm_addopts = []  # the project's ini addopts, as the learning run read them
# (when, test module or conftest, module, message, category, filename, lineno):
# warnings raised in the learning run by imports the zygote made too
_warm_warnings = []
_rewrite_marks = []  # names modules marked for assertion rewriting at warm-up
# path -> (stat key, code): what pytest's rewriter made of each test module
# and conftest in the learning run
_rewritten_code = {}
_env_ops = []  # os.environ writes of warm-up imports: (op, key, value)
_chdirs = []  # directories warm-up imports changed into
_path_front = []  # sys.path entries warm-up imports put before the start's
_path_back = []  # and after it
_exit_handlers = []  # atexit handlers standard-library imports registered
_blas_limited = []  # thread-count variables warm-up set to 1
_blas_lib = []  # [the loaded OpenBLAS (ctypes), or None], found at warm-up
# In a child that re-imports modules: generators of workarounds to finish
# after the session (pytest_zygote.workaround); None elsewhere.
_workaround_pending = None
_edges = {}  # project module -> modules it imported at warm-up
# Inputs of imports other than code (docs/design.md): a module imported
# here is stale for a run whose inputs differ from what its import read.
_env_reads = {}  # module -> {variable: value, or None when unset}, as first read
_env_project = {}  # the same for project modules (a child imports them again)
_data_reads = {}  # project file read at import -> [stat key, {modules}]
_data_project = {}  # the same, for those a child follows: -> (stat key, project modules)
# Project modules pytest or a plugin imported at its own import (pytest on
# a project that is one of its dependencies): they hold the objects, and a
# child cannot import them again.
_early = set()
_rdeps = {}  # module -> project modules that import it
_progress_phase = ["starting"]  # warm-up phase, for `start`'s progress line
# len(sys.modules) at which progress is sent again: by count, not time, so
# that warm-up allocates the same from one generation to the next
_progress_due = [0]


def _progress(phase=None):
    """Tell a waiting `start` the warm-up phase and how many modules are
    imported: at each new phase and every 25 new modules in between (the
    import recorder calls this as imports happen)."""
    if _progress_phase[0] is None:  # the learning run: the zygote reports
        return
    if phase is not None:
        _progress_phase[0] = phase
    _progress_due[0] = len(sys.modules) + 25
    try:
        import _pytest_zygote_c
    except ImportError:  # not in the zygote binary
        return
    try:
        _pytest_zygote_c.progress("phase=%s\nmodules=%d\n" % (_progress_phase[0],
                                                               len(sys.modules)))
    except Exception:
        pass


def _is_project_file(path):
    if not path or not _root:
        return False
    if not (path == _root or path.startswith(_root + os.sep)):
        return False
    parts = path[len(_root):].split(os.sep)
    return not any(p in _NOT_PROJECT for p in parts)


# Files a module's import reads as code, not as data.
_CODE_SUFFIXES = (".py", ".pyc", ".pyi", ".so", ".pth", ".pyd")

# Directories the project walk skips: third-party code, caches, VCS.
_WALK_SKIP = frozenset(_NOT_PROJECT + (".git", ".hg", "__pycache__", "build", "dist",
                                       ".pytest_cache", ".mypy_cache", ".hypothesis"))


def _key(st):
    """What identifies a version of a file: mtime (ns), size, inode, and the
    inode change time, which no tool can set back (os.utime, cp -p, tar and
    rsync -t can restore an old mtime onto new contents)."""
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)


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
            stats[path] = _key(st)
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
                        # <=: file times tick every few ms (_older_than_source)
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
        if not _is_project_file(path):
            continue
        st = before.get(path)
        if st is None:
            try:
                o = os.stat(path)
            except OSError:
                continue
            st = _key(o)
        snap[name] = (path,) + st
    return snap


def warmup(root):
    """Import what runs import, and nothing else: no pytest session and no
    project hook runs here (docs/design.md, "Nothing warm-up did is visible").

    A forked child runs `pytest --collect-only` (the learning run) and
    reports, as it goes, the modules it imports that are not test modules or
    conftests; this process imports the same ones, in the same order, while
    the child goes on. Returns a dict for the supervisor: files, modules,
    seconds, threads, status, project_files.
    """
    global _root, _snapshot, _base_path, _zygote_pythonpath
    t0 = time.perf_counter()
    unrecord_atexit = _record_atexit()
    limited = _limit_blas_threads()
    _root = os.path.realpath(root)
    _base_path = list(sys.path)
    os.chdir(_root)
    _progress("scanning project files")
    before = _prewalk(_root)
    # python -m pytest puts the cwd first on sys.path; the zygote's cwd is the root.
    sys.path.insert(0, _root)
    sys.argv = [_pytest_main_file()]
    _progress("importing pytest")
    import pytest  # noqa: F401

    _cache_run_independent_work()
    _progress("learning imports")
    status = _learn_and_import()
    unrecord_atexit()
    for name in limited:
        if os.environ.get(name) == "1":
            del os.environ[name]
    _progress("freezing")
    _find_openblas()
    _drop_orphans()
    _freeze_distributions()
    _snapshot = _take_snapshot(before)
    _rdeps.clear()
    for importer, imported in _edges.items():
        if importer in _snapshot:
            for name in imported:
                if name != importer:
                    _rdeps.setdefault(name, set()).add(importer)
    for defining, holders in _registry_edges().items():
        _rdeps.setdefault(defining, set()).update(holders)
    _sort_inputs()
    _close_pinned()
    # Keep the warnings of modules this process holds (a run that purges
    # one imports it again and hears its warnings itself) whose category it
    # has too.
    kept = []
    for when, path, module, text, cat_module, cat_name, filename, lineno in _warm_warnings:
        category = sys.modules.get(cat_module)
        for part in cat_name.split("."):
            category = getattr(category, part, None)
        if module in sys.modules and isinstance(category, type) and \
                issubclass(category, Warning):
            kept.append((when, path, module, text, category, filename, lineno))
    _warm_warnings[:] = kept
    pp = os.environ.get("PYTHONPATH", "")
    _zygote_pythonpath = [os.path.abspath(p) for p in pp.split(os.pathsep) if p]
    gc.collect()
    gc.freeze()
    try:
        threads = len(os.listdir("/proc/self/task"))
    except OSError:
        threads = 1
    return {
        "files": _outside_files(),
        "modules": len(sys.modules),
        "seconds": time.perf_counter() - t0,
        "threads": threads,
        "status": status,
        "project_files": len(_snapshot),
    }


def _sort_inputs():
    """What imports here read besides their code, sorted by who can follow
    a difference: project modules are imported again by a child whose
    environment differs from what they read (_env_project); for the others
    the supervisor sends the run to a zygote warmed with its environment
    (the E lines of _outside_files). With reload = fresh, project modules
    are not imported again in children either."""
    fresh = os.environ.get("PYTEST_ZYGOTE_RELOAD") == "fresh"
    ignore = set(_blas_limited)
    _env_project.clear()
    for name in list(_env_reads):
        reads = {k: v for k, v in _env_reads[name].items()
                 if k not in ignore and not k.startswith("PYTEST_ZYGOTE_")}
        if name not in sys.modules or not reads:
            del _env_reads[name]
        elif name in _snapshot and not fresh:
            _env_project[name] = reads
            del _env_reads[name]
        else:
            _env_reads[name] = reads
    _data_project.clear()
    for path, (key, mods) in _data_reads.items():
        mods = {m for m in mods if m in _snapshot}
        if mods and not fresh:
            _data_project[path] = (key, mods)


def _close_pinned():
    """The project modules pytest imported (_early) and what they import:
    a change there reaches objects pytest holds."""
    stack = [n for n in _early if n in _snapshot]
    _early.clear()
    while stack:
        name = stack.pop()
        if name in _early or name not in _snapshot:
            continue
        _early.add(name)
        stack.extend(_edges.get(name, ()))
        dotted = name + "."
        stack.extend(m for m in _snapshot if m.startswith(dotted) and "." not in m[len(dotted):])


def _registry_edges():
    """Project modules that hold what another project module defined:
    {defining module: {holding modules}}. A registry (a dict a decorator
    fills, a click group, SQLAlchemy's declarative registry) keeps the
    classes and functions other modules gave it at import; when those
    modules are imported again in a child, the registry must be too, or it
    keeps the old objects (or refuses the new ones). Found by following
    each project module's own globals (not what it imported by name) two or
    three containers deep, a bounded number of objects per module."""
    import types
    import weakref

    project = {}
    for name in _snapshot:
        mod = sys.modules.get(name)
        if mod is not None:
            project[name] = mod
    simple = (str, bytes, int, float, complex, bool, type(None), types.ModuleType,
              types.BuiltinFunctionType, types.MethodDescriptorType, types.GetSetDescriptorType)
    held = {}
    for rname, rmod in project.items():
        imported = [project[m] for m in _edges.get(rname, ()) if m in project and m != rname]
        try:
            items = list(vars(rmod).items())
        except TypeError:
            continue
        stack = []
        for key, obj in items:
            if issubclass(type(obj), simple) or key.startswith("__"):
                continue
            if any(getattr(m, key, None) is obj for m in imported):
                continue  # from m import key: m's, not rname's
            owner = getattr(obj, "__module__", None) if issubclass(type(obj), type) else None
            if owner and owner != rname and getattr(sys.modules.get(owner), key, None) is obj:
                continue  # a class imported from a library
            stack.append((obj, 0))
        seen = set()
        budget = 2000
        while stack and budget:
            obj, depth = stack.pop()
            # type(obj), never isinstance(): that asks a lazy proxy for its
            # __class__, and Django's settings would set themselves up.
            t = type(obj)
            if id(obj) in seen or issubclass(t, simple):
                continue
            seen.add(id(obj))
            budget -= 1
            if issubclass(t, (types.FunctionType, type)):
                owner = getattr(obj, "__module__", None)
                if owner != rname and owner in project:
                    held.setdefault(owner, set()).add(rname)
                    continue
                if issubclass(t, types.FunctionType) or depth >= 3:
                    continue
                try:
                    children = list(type.__dict__["__dict__"].__get__(obj).values())
                except Exception:  # noqa: BLE001
                    continue
            elif depth >= 3:
                continue
            elif issubclass(t, dict):
                children = [v for kv in dict.items(obj) for v in kv]
            elif issubclass(t, (list, tuple, set, frozenset)):
                children = list(obj)
            elif issubclass(t, (weakref.WeakValueDictionary, weakref.WeakKeyDictionary)):
                try:
                    children = [v for kv in list(obj.items()) for v in kv]
                except Exception:  # noqa: BLE001
                    continue
            else:
                try:
                    # Not getattr: a lazy proxy (Django's settings) would set itself up.
                    d = object.__getattribute__(obj, "__dict__")
                except Exception:  # noqa: BLE001 - no __dict__
                    continue
                if type(d) is not dict:
                    continue
                children = list(d.values())
            stack.extend((c, depth + 1) for c in children)
    return held


# Thread-count variables of the BLAS and OpenMP runtimes: each starts its
# thread pool when its library is loaded (import numpy), and a zygote must
# not hold threads when it forks.
_BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                     "BLIS_NUM_THREADS")


def _limit_blas_threads():
    """Load BLAS single-threaded in the zygote unless the user chose a
    number; children give it back the number a cold run would use
    (_restore_blas_threads). Returns the variables set here."""
    limited = [k for k in _BLAS_THREAD_VARS if k not in os.environ]
    for k in limited:
        os.environ[k] = "1"
    _blas_limited[:] = limited
    return limited


def _restore_blas_threads(env):
    """In a child: the thread count OpenBLAS would have chosen in a cold run
    with this environment (its variables, else one per CPU it may use)."""
    lib = _blas_lib[0] if _blas_lib else None
    if lib is None:
        return
    want = None
    # What OpenBLAS reads at load (blas_get_cpu_number): its own variables,
    # then OMP_NUM_THREADS; unset or 0, the CPUs it may run on.
    for k in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"):
        v = env.get(k)
        if v:
            try:
                want = int(v.split(",")[0])
            except ValueError:
                pass
            if want:
                break
    if not want:
        try:
            want = len(os.sched_getaffinity(0))
        except OSError:
            want = os.cpu_count() or 1
    if want > 1:
        lib.openblas_set_num_threads(want)


def _find_openblas():
    """At the end of warm-up, when BLAS was limited and numpy is imported:
    find OpenBLAS once, so children need not read /proc/self/maps."""
    if _blas_limited and any(m in sys.modules for m in (
            "numpy.core._multiarray_umath", "numpy._core._multiarray_umath")):
        _blas_lib[:] = [_openblas()]


def _openblas():
    """The OpenBLAS library this process loaded, or None."""
    try:
        with open("/proc/self/maps") as f:
            paths = {ln.split(None, 5)[5].strip() for ln in f if "openblas" in ln
                     and len(ln.split(None, 5)) == 6}
    except OSError:
        return None
    import ctypes

    for p in sorted(paths):
        try:
            lib = ctypes.CDLL(p, mode=os.RTLD_NOLOAD)
        except OSError:
            continue
        if hasattr(lib, "openblas_set_num_threads"):
            return lib
    return None


# Callers of os.environ[key] that read the whole environment (a copy, an
# items() loop, a comparison): not reads of one variable by a module.
_WHOLE_ENV_READERS = frozenset(("copy", "__iter__", "__eq__", "__or__", "__ror__", "__repr__"))
# Modules of os.environ's own machinery (Mapping.get is collections.abc's).
_ENV_MACHINERY = frozenset(("os", "_collections_abc", "collections.abc"))


def _note_env_read(key, value):
    """Note that the module whose body is executing (the innermost module
    frame on the stack: a helper it calls counts as it) read variable key;
    and so did the module whose code read it, which may keep what it made
    of it (Django's settings, configured when a project module's body
    first reads one, belong to django.conf)."""
    f = sys._getframe(2)
    if f.f_code.co_name in _WHOLE_ENV_READERS:
        return
    reader = None
    while f is not None and f.f_code.co_name != "<module>":
        if reader is None and f.f_globals.get("__name__") not in _ENV_MACHINERY:
            reader = f.f_globals.get("__name__")
        f = f.f_back
    if f is None:
        return
    name = f.f_globals.get("__name__")
    for n in (name, reader):
        if isinstance(n, str) and n != "__main__" and \
                not n.startswith(("pytest_zygote", "_pytest_zygote")):
            _env_reads.setdefault(n, {}).setdefault(key, value)


class _SideEffects:
    """What importing modules here did to the process beyond defining them:
    os.environ writes, os.chdir calls, sys.path entries. A child, whose
    environment, cwd and sys.path are the client's, does the same again
    after setting them, as a cold run whose imports did it would have.
    It also notes the variables each import read (_env_reads), unless an
    import here wrote them first."""

    def __init__(self):
        self._path_before = list(sys.path)
        environ = os.environ
        ops = _env_ops
        self._cls = cls = type(environ)
        written = self.written = set()

        class Recording(cls):
            def __getitem__(self, key):
                try:
                    value = cls.__getitem__(self, key)
                except KeyError:
                    if key not in written:
                        _note_env_read(key, None)
                    raise
                if key not in written:
                    _note_env_read(key, value)
                return value

            def __setitem__(self, key, value):
                ops.append(("set", key, value))
                written.add(key)
                super().__setitem__(key, value)

            def __delitem__(self, key):
                ops.append(("del", key, None))
                written.add(key)
                super().__delitem__(key)

            def pop(self, key, *default):
                # A key the zygote lacks may be one the run's environment has.
                ops.append(("del", key, None))
                written.add(key)
                return cls.pop(self, key, *default)

            def setdefault(self, key, value=None):
                ops.append(("setdefault", key, value))
                written.add(key)
                if key not in self:
                    cls.__setitem__(self, key, value)
                return self[key]

        environ.__class__ = Recording
        self._chdir = os.chdir

        def chdir(path):
            self._chdir(path)
            _chdirs.append(os.getcwd())

        os.chdir = chdir

    def stop(self):
        os.environ.__class__ = self._cls
        os.chdir = self._chdir
        if _chdirs:
            self._chdir(_root)
        before = set(self._path_before)
        first = self._path_before[0] if self._path_before else None
        at_front = True
        for p in sys.path:
            if p == first:
                at_front = False
            elif p not in before:
                (_path_front if at_front else _path_back).append(p)


def _replay_side_effects():
    """In a child, after the client's environment, cwd and path are set."""
    for op, key, value in _env_ops:
        try:
            if op == "set":
                os.environ[key] = value
            elif op == "setdefault":
                os.environ.setdefault(key, value)
            else:
                os.environ.pop(key, None)
        except Exception:  # noqa: BLE001 - a value os.environ refuses
            pass
    if _path_front:
        sys.path[:0] = [p for p in _path_front if p not in sys.path]
    sys.path.extend(p for p in _path_back if p not in sys.path)
    for d in _chdirs:
        try:
            os.chdir(d)
        except OSError:
            pass


def _fork_learning_run():
    """Fork the learning run; returns (the file to read its records from,
    its pid)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the learning run
        code = 70
        try:
            os.close(r)
            try:
                import _pytest_zygote_c
            except ImportError:  # not in the zygote binary
                pass
            else:
                _pytest_zygote_c.learning_child()
            _progress_phase[0] = None
            code = _learning_run(w)
        finally:
            os._exit(code)
    os.close(w)
    return os.fdopen(r, "rb"), pid


def _learn_and_import():
    """Fork the learning run and import what it reports as it goes, with
    the import recorder and the side-effect recorder on. Returns the
    warm-up status ("ok", or what went wrong, in words).

    What it reported is kept in the file PYTEST_ZYGOTE_LEARNED names; a
    generation the supervisor starts only for a new hash seed, with no
    change since (PYTEST_ZYGOTE_REPLAY=1), reads that instead of running
    it again. Replayed records are checked as fresh ones are: a module is
    imported only from the file it was found in, rewritten code is used
    only for a file with the same stat, a data file's stat is compared."""
    import marshal
    import pickle
    import struct
    import warnings

    learned = os.environ.pop("PYTEST_ZYGOTE_LEARNED", None)
    replay = os.environ.pop("PYTEST_ZYGOTE_REPLAY", None) == "1" and learned
    f = tee = pid = None
    if replay:
        try:
            f = open(learned, "rb")
        except OSError:
            f = None
        else:
            # (into the server's log)
            print("pytest-zygote: generation for a new hash seed: replayed the learning run "
                  "of the last generation", flush=True)
    if f is None:
        f, pid = _fork_learning_run()
        if learned:
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
    unrecord = _record_imports()
    side_effects = _SideEffects()
    status = "ok"
    ended = False
    hook = None
    pending = []  # modules reported before the ini values the hook needs
    plugins = []  # what the learning run registered as plugins
    _early.update(sys.modules)  # pytest's own imports
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the learning run's to report
            while True:
                head = f.read(4)
                if len(head) < 4:
                    break
                data = f.read(struct.unpack("<I", head)[0])
                if tee is not None:
                    tee.write(head + data)
                try:
                    rec = pickle.loads(data)
                except Exception:  # noqa: BLE001 - a warning class this process lacks
                    continue
                kind = rec[0]
                if kind == "m":
                    pending.append(rec[1:])
                elif kind == "f":
                    _data_reads.setdefault(rec[2], [rec[3], set()])[1].add(rec[1])
                elif kind == "w":
                    _warm_warnings.append(rec[1:])
                elif kind == "c":
                    try:
                        _rewritten_code[rec[1]] = (rec[2], marshal.loads(rec[3]))
                    except (ValueError, EOFError, TypeError):
                        pass
                elif kind == "p":
                    plugins.append(rec[1:])
                elif kind == "e":
                    for importer, imported in rec[1].items():
                        _edges.setdefault(importer, set()).update(imported)
                elif kind == "ini":
                    _warm_addopts[:] = rec[1].get("addopts", [])
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
                if len(sys.modules) >= _progress_due[0]:
                    _progress()
    finally:
        f.close()
        if hook is not None:
            sys.meta_path.remove(hook)
            _rewrite_marks[:] = sorted(hook.marked_later())
        side_effects.stop()
        unrecord()
        wstatus = os.waitpid(pid, 0)[1] if pid else 0
        if tee is not None:
            tee.close()
            try:
                if ended and status == "ok":
                    os.replace(tee_path, learned)
                else:
                    os.unlink(tee_path)
            except OSError:
                pass
    plugins.append(("module", "_pytest.hookspec", None))
    _fill_run_caches(dict.fromkeys(plugins))
    if os.WIFSIGNALED(wstatus):
        status = "learning run killed by signal %d" % os.WTERMSIG(wstatus)
    elif os.WEXITSTATUS(wstatus) == 70 and status == "ok":
        status = "learning run failed"
    return status


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
                    _is_project_file(os.path.abspath(getattr(mod, "__file__", None) or "")):
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
    kept for the children's hooks (_rewrite_marks)."""
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


class _CollectBudget:
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
    _edges.clear()
    _record_imports()
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
            if path.endswith(_CODE_SUFFIXES) or not _is_project_file(path):
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
                send(("f", name, path, _key(st)))

    builtins.open = io.open = noting_open  # this process ends with the learning run

    for module in (_pytest.python, _pytest.config):
        module.import_path = import_path

    # The code pytest's rewriter made or read for each test module and
    # conftest, for the children (see _refuse_stale_bytecode).
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
            key = _key(os.stat(source))
        except OSError:
            key = None
        # A cache pytest would accept after a same-second, same-size edit
        # made while this run goes on: rewrite the file instead.
        if _older_than_source(pyc, source):
            return None
        co = read_pyc(source, pyc, trace)
        if co is not None and key is not None:
            keep(source, key, co)
        return co

    def rewriting(fn, config):
        st, co = rewrite_test(fn, config)
        keep(fn, _key(st), co)
        return st, co

    rewrite._read_pyc, rewrite._rewrite_test = reading_pyc, rewriting

    # Report every 8 new modules while imports happen, so the zygote
    # imports a module while this run is still busy with the next ones. By
    # count, not by time: the stream is then the same from one generation
    # to the next, and so is the order of the zygote's allocations (the
    # spare prepares the pages the last generation's runs wrote, at the
    # same addresses).

    # Compiled under an importlib._bootstrap name, as the recorder is (see
    # _record_imports): warnings must not point at this wrapper.
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

    class Learner(_CollectBudget):

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

    sys.argv = [_pytest_main_file()]
    rc = 1
    try:
        rc = int(pytest.main(["--collect-only", "-qq", "-p", "no:cacheprovider"],
                             plugins=[Learner()]))
    except BaseException:  # noqa: BLE001 - what was learned is still good
        pass
    try:
        scan()
        send(("e", {k: v for k, v in _edges.items() if k not in held}))
        send(("end", rc))
        out.flush()
    except Exception:  # noqa: BLE001
        return 70
    return 0


_RECORDING_IMPORT = """
def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
    module = original_import(name, globals, locals, fromlist, level)
    try:
        if len(sys.modules) >= progress_due[0]:
            progress()
        f = globals.get("__file__") if globals else None
        if not (f and f.startswith(prefix)):
            # A module outside the project importing a project module at
            # its own import (pytest, on a project it depends on).
            mf = getattr(module, "__file__", None)
            if mf and mf.startswith(prefix) and sys._getframe(1).f_code.co_name == "<module>":
                pinned.add(module.__name__)
                for item in fromlist or ():
                    pinned.add("%s.%s" % (module.__name__, item))
        elif f and f.startswith(prefix):
            importer = globals["__name__"]
            if level:
                package = globals.get("__package__") or importer.rpartition(".")[0]
                base = importlib.util.resolve_name("." * level + name, package)
            else:
                base = name
            add(importer, base)
            for item in fromlist or ():
                sub = "%s.%s" % (base, item)
                if item != "*" and sub in sys.modules:
                    add(importer, sub)
    except Exception:
        pass
    return module
"""


def _reset_libraries(cwd):
    """Libraries that compute a default from the process at import time.
    hypothesis puts its example database under the cwd it was imported in
    (the root, in the zygote) and caches HYPOTHESIS_STORAGE_DIRECTORY once
    read: point both back at this run's cwd and environment. pytest-xdist
    freezes sys.path when its plugin is imported and gives that to its
    workers: give it this run's (with the client's PYTHONPATH)."""
    xp = sys.modules.get("xdist.plugin")
    frozen = getattr(xp, "_sys_path", None)
    if isinstance(frozen, list):
        frozen[:] = sys.path  # in place: xdist.workermanage imported the list
    hc = sys.modules.get("hypothesis.configuration")
    if hc is not None:
        if hasattr(hc, "__hypothesis_home_directory_default"):
            setattr(hc, "__hypothesis_home_directory_default",
                    os.path.join(cwd, ".hypothesis"))
        if hasattr(hc, "__hypothesis_home_directory"):
            setattr(hc, "__hypothesis_home_directory", None)


def _record_imports():
    """Record which project module imports which module while warm-up runs:
    `import a.b` (an edge to a and to a.b), `from a import b` (to a, and to
    a.b when that is a module), relative imports, imports inside functions
    that run at warm-up, and importlib.import_module. Only importers whose
    file is under the root are recorded, so the cost elsewhere is one string
    comparison. Returns the function that puts the originals back."""
    import builtins
    import importlib

    original_import = builtins.__import__
    original_import_module = importlib.import_module
    prefix = _root + os.sep

    def add(importer, name):
        parts = name.split(".")
        edges = _edges.setdefault(importer, set())
        for i in range(1, len(parts) + 1):
            edges.add(".".join(parts[:i]))

    # The wrapper sits in every import's call chain. warnings.warn() skips
    # frames whose file name contains "importlib" and "_bootstrap" when it
    # looks for the caller a stacklevel names, so the wrapper is compiled
    # under such a name: otherwise an import-time warning would be reported
    # at the wrapper instead of at the importing line.
    ns = {"original_import": original_import, "prefix": prefix, "add": add, "sys": sys,
          "importlib": importlib, "progress": _progress,
          "progress_due": _progress_due, "pinned": _early}
    exec(compile(_RECORDING_IMPORT, "<pytest_zygote importlib._bootstrap recorder>", "exec"), ns)
    recording_import = ns["recording_import"]

    def recording_import_module(name, package=None):
        module = original_import_module(name, package)
        try:
            g = sys._getframe(1).f_globals
            f = g.get("__file__")
            if f and f.startswith(prefix):
                add(g["__name__"], module.__name__)
        except Exception:
            pass
        return module

    import importlib.util  # noqa: F401 - resolve_name, before the wrapper is in place

    builtins.__import__ = recording_import
    importlib.import_module = recording_import_module

    def restore():
        builtins.__import__ = original_import
        importlib.import_module = original_import_module

    return restore


def _closure(dirty):
    """The reverse import closure of the dirty modules: them, every project
    module that imports one of them (transitively), and the submodules of
    every package among them (a re-imported package lacks its old submodules
    as attributes)."""
    result = set(dirty)
    stack = list(dirty)
    while stack:
        name = stack.pop()
        more = set(_rdeps.get(name, ()))
        dotted = name + "."
        more.update(m for m in _snapshot if m.startswith(dotted))
        for m in more:
            if m not in result:
                result.add(m)
                stack.append(m)
    return result


class _ReplayWarmUp:
    """A plugin for children: what importing modules at warm-up did that a
    cold run would have seen happen in the run.

    Warnings: those raised while a module this child did not import again
    was imported (by a test module or conftest in the learning run) come
    back under the run's own filters, where a cold run raises them: in the
    config phase, or when the collector of the test module that imported it
    starts (a conftest's, with the first collector). Rewrite marks: names a
    module imported at warm-up gave to register_assert_rewrite are marked on
    this run's rewriting hook, as they would have been when it imported."""

    def __init__(self, replay):
        self._config = [w for w in replay if w[0] == "config"]
        self._collect = {}
        for w in replay:
            if w[0] != "config":
                self._collect.setdefault(w[1], []).append(w)
        self._conftests_done = False

    def pytest_load_initial_conftests(self, early_config):
        if _rewrite_marks:
            from _pytest.assertion import assertstate_key

            state = early_config.stash.get(assertstate_key, None)
            if state is not None and state.hook is not None:
                state.hook.mark_rewrite(*_rewrite_marks)
        _warn_again(self._config)

    def pytest_collectstart(self, collector):
        path = str(getattr(collector, "path", ""))
        due = self._collect.pop(path, [])
        if not self._conftests_done:
            self._conftests_done = True
            for key in [k for k in self._collect if os.path.basename(k or "") == "conftest.py"]:
                due += self._collect.pop(key)
        _warn_again(due)


def _warn_again(replay):
    import warnings

    for _when, _path, _module, message, category, filename, lineno in replay:
        warnings.warn_explicit(message, category, filename, lineno)


# Versions the run-independent caches below were checked against; with any
# other pytest or pluggy they stay off (the functions they wrap may differ).
_CACHE_TESTED = {"pytest": ("7.2.",), "pluggy": ("1.0.",)}


def _cache_run_independent_work():
    """Every pytest session redoes work whose result cannot differ between
    runs: pluggy inspects the signature of every hook implementation of every
    plugin it registers, and the fixture manager lists every attribute of
    every plugin module looking for fixtures. Remember both for objects that
    outlive a run (functions and third-party modules loaded at warm-up);
    the caches fill at warm-up and children only read them (their additions
    die with them). Within a session, pytest also builds its argparse parser
    from scratch for each of its several parses; it is reused while no
    option was added. PYTEST_ZYGOTE_RUN_CACHES=0 turns this off."""
    if os.environ.get("PYTEST_ZYGOTE_RUN_CACHES") == "0":
        return
    import pluggy
    import pluggy._hooks
    import pytest

    import _pytest.config.argparsing
    import _pytest.fixtures

    for mod, version in (("pytest", pytest.__version__), ("pluggy", pluggy.__version__)):
        if not version.startswith(_CACHE_TESTED[mod]):
            return

    original_varnames = pluggy._hooks.varnames
    signatures = {}

    def varnames(func):
        # A bound method's names leave out self: key on the function and that.
        key = (getattr(func, "__func__", func), hasattr(func, "__func__"))
        try:
            return signatures[key]
        except (KeyError, TypeError):
            pass
        result = original_varnames(func)
        try:
            signatures[key] = result
        except TypeError:
            pass
        return result

    pluggy._hooks.varnames = varnames
    _cached[:] = [varnames]

    fixtures = _pytest.fixtures
    builtin_dir = dir
    scans = {}
    module_type = type(os)

    def fixture_dir(*args):
        # parsefactories() is the only caller of dir() in _pytest.fixtures.
        if len(args) != 1 or type(args[0]) is not module_type:
            return builtin_dir(*args)
        holder = args[0]
        names = scans.get(holder)
        if names is None:
            names = builtin_dir(holder)
            if _is_project_file(getattr(holder, "__file__", None) or ""):
                return names  # purged and re-imported in children: no caching
            names = [n for n in names if isinstance(
                fixtures.getfixturemarker(fixtures.safe_getattr(holder, n, None)),
                fixtures.FixtureFunctionMarker)]
            scans[holder] = names
        return list(names)

    fixtures.dir = fixture_dir
    _cached.append(fixture_dir)

    parser_class = _pytest.config.argparsing.Parser
    original_getparser = parser_class._getparser

    def _getparser(self):
        # What _getparser builds from: the groups and how many options each
        # has (options are only ever added), the program name.
        shape = (self.prog, tuple((id(g), len(g.options))
                                  for g in self._groups + [self._anonymous]))
        built = self.__dict__.get("_pytest_zygote_parser")
        if built is not None and built[0] == shape:
            return built[1]
        optparser = original_getparser(self)
        self.__dict__["_pytest_zygote_parser"] = (shape, optparser)
        return optparser

    parser_class._getparser = _getparser
    _speculate_get_config()


# The caching varnames and fixture dir() of _cache_run_independent_work.
_cached = []


def _fill_run_caches(plugins):
    """Fill the caches of _cache_run_independent_work for the plugins the
    learning run registered (modules, and the classes of plugin objects),
    as a session in this process would have: no session runs here."""
    if len(_cached) != 2:
        return
    import inspect
    import types

    varnames, fixture_dir = _cached
    holder = object()
    for kind, module, qualname in plugins:
        obj = sys.modules.get(module)
        if obj is None or _is_project_file(os.path.abspath(getattr(obj, "__file__", "") or "")):
            continue
        try:
            if kind == "module":
                fixture_dir(obj)
                for name in dir(obj):
                    if name.startswith("pytest_") and inspect.isroutine(getattr(obj, name, None)):
                        varnames(getattr(obj, name))
                continue
            for part in qualname.split("."):
                obj = getattr(obj, part, None)
            if not isinstance(obj, type):
                continue
            for name in dir(obj):
                f = getattr(obj, name, None)
                if name.startswith("pytest_") and inspect.isfunction(f):
                    varnames(types.MethodType(f, holder))  # as registered: bound
        except Exception:  # noqa: BLE001 - a plugin that resists is scanned by runs
            continue


# What a spare built ahead of its request (spare_speculate): (config, the
# environment variables the build read), taken by the run's get_config().
_speculated = None
# Environment variables that pytest's get_config() reads: the plugin manager
# turns on tracing for PYTEST_DEBUG, the cache provider's options default
# under TOX_ENV_DIR.
_SPECULATION_ENV = ("PYTEST_DEBUG", "TOX_ENV_DIR")


def _speculate_get_config():
    """Every run begins with get_config(): a fresh plugin manager and config
    with pytest's ~50 built-in plugins registered and their options added,
    ~10% of a small run. It depends only on the `-p no:NAME` arguments, two
    environment variables and the working directory (recorded, not used),
    so a spare builds one before its request comes and the run takes it
    when its arguments exclude no plugin and those variables are the same."""
    import _pytest.config

    original = _pytest.config.get_config

    def get_config(args=None, plugins=None):
        global _speculated
        spec, _speculated = _speculated, None
        if spec is not None and not _excludes_plugins(args) and \
                spec[1] == tuple(os.environ.get(k) for k in _SPECULATION_ENV):
            config = spec[0]
            config.invocation_params = config.InvocationParams(
                args=args or (), plugins=plugins, dir=pathlib.Path.cwd())
            return config
        return original(args, plugins)

    _pytest.config.get_config = get_config
    global _build_config
    _build_config = original


_build_config = None


def _excludes_plugins(args):
    """Whether pytest's consider_preparse(args, exclude_only=True) would block
    a plugin: a `-p no:NAME` or `-pno:NAME` argument."""
    it = iter(args or ())
    for opt in it:
        if not isinstance(opt, str):
            continue
        if opt == "-p":
            parg = next(it, "")
        elif opt.startswith("-p"):
            parg = opt[2:]
        else:
            continue
        if not isinstance(parg, str) or parg.strip().startswith("no:"):
            return True
    return False


def spare_speculate():
    """In a spare child, before its request (called from C): build the
    config the run's get_config() would build. Anything going wrong leaves
    the run to build its own."""
    global _speculated
    if _build_config is None or os.environ.get("PYTEST_DEBUG"):
        return
    try:
        env = tuple(os.environ.get(k) for k in _SPECULATION_ENV)
        _speculated = (_build_config(None, None), env)
    except Exception:  # noqa: BLE001 - the run will build it and see the error
        _speculated = None


class _FrozenDistribution:
    """Stands in for an importlib.metadata.Distribution with its metadata and
    entry points read once, at warm-up. pluggy and pytest scan every installed
    distribution on every run (entry_points.txt, RECORD); in a child that is
    pure repetition, since a change to installed packages restarts the zygote.
    """

    def __init__(self, dist):
        self._dist = dist
        self.entry_points = dist.entry_points
        self.metadata = dist.metadata
        self._files = None

    @property
    def files(self):
        if self._files is None:
            self._files = self._dist.files or []
        return self._files

    def __getattr__(self, name):
        return getattr(self._dist, name)


def _freeze_distributions():
    import importlib.metadata as md

    if getattr(md.distributions, "_pytest_zygote", False):
        return
    original = md.distributions
    try:
        frozen = [_FrozenDistribution(d) for d in original()]
    except Exception:
        return
    # pytest lists the files of every distribution with a pytest11 entry
    # point on every run (to mark its modules for assertion rewriting):
    # read those lists once, here, not from RECORD files in every child.
    for d in frozen:
        try:
            if any(ep.group == "pytest11" for ep in d.entry_points):
                d.files  # noqa: B018 - fills the cache
        except Exception:  # noqa: BLE001 - a broken distribution is read when asked
            pass

    def distributions(**kwargs):
        if kwargs:
            return original(**kwargs)
        return iter(frozen)

    distributions._pytest_zygote = True
    md.distributions = distributions


def _outside_files():
    """What the supervisor must watch beyond the project tree, one per line:
    "X<TAB>dir" for every directory holding an imported file outside the
    project (site-packages, the standard library, a conftest above the root)
    and every site-packages directory (installs add .dist-info and .pth
    files there). A change there means a child can no longer be trusted."""
    import site

    dirs = set()
    for mod in list(sys.modules.values()):
        f = getattr(mod, "__file__", None)
        if not isinstance(f, str):
            continue
        f = os.path.abspath(f)
        if not _is_project_file(f):
            dirs.add(os.path.dirname(f))
    try:
        sites = site.getsitepackages() + [site.getusersitepackages()]
    except Exception:
        sites = []
    dirs.update(d for d in sites if os.path.isdir(d))
    lines = ["X\t%s\n" % d for d in sorted(dirs)]
    # Inputs of imports (_sort_inputs): a change of a P or F file needs a
    # fresh generation; a D file is the child's to follow, like code. E: a
    # variable a module outside the project read, with a digest of its
    # value ("-": unset); a run whose value differs goes to another zygote.
    lines += ["P\t%s\n" % _snapshot[n][0] for n in sorted(_early)]
    lines += ["M\t%s\n" % p for p in sorted({e[0] for e in _snapshot.values()})]
    for path, (key, mods) in sorted(_data_reads.items()):
        if path in _data_project:
            lines.append("D\t%s\n" % path)
        elif any(m in sys.modules for m in mods):
            lines.append("F\t%s\n" % path)
    env = {}
    for reads in _env_reads.values():
        for k, v in reads.items():
            env.setdefault(k, v)
    for k, v in sorted(env.items()):
        if "\t" not in k and "\n" not in k:
            lines.append("E\t%s\t%s\n" % (k, "-" if v is None else _digest(v)))
    return "".join(l for l in lines if l.count("\n") == 1)


def _digest(value):
    """FNV-1a (64 bits) of a value's bytes, as the supervisor computes it
    (src/supervisor/variant.c, env_digest)."""
    h = 0xcbf29ce484222325
    for b in os.fsencode(value):
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def _pytest_main_file():
    # sys.argv[0] under `python -m pytest` is pytest/__main__.py; argparse
    # uses its basename in usage lines, so match it.
    import importlib.util

    spec = importlib.util.find_spec("pytest.__main__")
    return spec.origin if spec and spec.origin else "pytest"


def _new_stdio(unbuffered=False):
    """Recreate sys.std* on fds 0/1/2 (now the client's), as CPython's
    create_stdio does (PYTHONUNBUFFERED: stdout and stderr write through)."""
    old_out = sys.__stdout__ or sys.stdout
    enc = getattr(old_out, "encoding", None) or "utf-8"
    errors = getattr(old_out, "errors", None) or "strict"
    old_in = sys.__stdin__ or sys.stdin
    in_errors = getattr(old_in, "errors", None) or errors

    def make(fd, mode, name, errs, line):
        raw = io.FileIO(fd, mode, closefd=False)
        raw.name = name
        if mode == "rb":
            buf = io.BufferedReader(raw)
        elif unbuffered:
            return io.TextIOWrapper(raw, encoding=enc, errors=errs, line_buffering=line,
                                    write_through=True)
        else:
            buf = io.BufferedWriter(raw)
        return io.TextIOWrapper(buf, encoding=enc, errors=errs, line_buffering=line)

    sys.stdin = sys.__stdin__ = make(0, "rb", "<stdin>", in_errors, False)
    sys.stdout = sys.__stdout__ = make(1, "wb", "<stdout>", errors, os.isatty(1))
    sys.stderr = sys.__stderr__ = make(2, "wb", "<stderr>", "backslashreplace", True)


def _apply_path(cwd, env):
    """sys.path as `python -m pytest` would have it in cwd with the client's PYTHONPATH."""
    base = [p for p in _base_path if os.path.abspath(p) not in _zygote_pythonpath]
    pp = env.get("PYTHONPATH", "")
    extra = [os.path.abspath(os.path.join(cwd, p)) for p in pp.split(os.pathsep) if p]
    sys.path[:] = [cwd] + extra + [p for p in base if p not in extra]


def _add_runner_path(text):
    """The plugin's hand-over sends the sys.path of the process it replaced
    (PYTEST_ZYGOTE_SYS_PATH, JSON): directories a runner script added before
    calling pytest.main() go in after the first entry, in their order, so
    that the tests import what they would have imported there."""
    if not text:
        return
    import json

    try:
        entries = json.loads(text)
    except ValueError:
        return
    have = set(sys.path)
    extra = [p for p in entries if isinstance(p, str) and p and p not in have]
    sys.path[1:1] = list(dict.fromkeys(extra))


def _apply_interpreter_env(old, new):
    """The few interpreter-start variables that can still follow the client,
    and the time zone, which libc read from the zygote's TZ."""
    sys.dont_write_bytecode = bool(new.get("PYTHONDONTWRITEBYTECODE"))
    if bool(new.get("PYTHONFAULTHANDLER")) != bool(old.get("PYTHONFAULTHANDLER")):
        import faulthandler

        if new.get("PYTHONFAULTHANDLER"):
            faulthandler.enable()
        else:
            faulthandler.disable()
    if os.environ.get("TZ") != old.get("TZ"):
        time.tzset()
    if new.get("PYTHONWARNINGS") != old.get("PYTHONWARNINGS"):
        import warnings

        opts = [o for o in new.get("PYTHONWARNINGS", "").split(",") if o]
        sys.warnoptions[:] = opts
        warnings._processoptions(opts)


def _dirty_modules():
    """Project modules whose file changed since warm-up (see _key)."""
    dirty = []
    for name, entry in _snapshot.items():
        try:
            st = os.stat(entry[0])
        except OSError:
            dirty.append(name)
            continue
        if _key(st) != entry[1:]:
            dirty.append(name)
    return dirty


def _inputs_changed(env):
    """Project modules whose import read something this run has otherwise:
    an environment variable with another value (or set where it was not),
    or a project data file changed since."""
    changed = set()
    for name, reads in _env_project.items():
        for key, value in reads.items():
            if env.get(key) != value:
                changed.add(name)
                break
    for path, (key, mods) in _data_project.items():
        try:
            same = _key(os.stat(path)) == key
        except OSError:
            same = False
        if not same:
            changed.update(mods)
    return changed


def _drop_bytecode(path):
    """Remove cached bytecode for path: CPython and pytest validate it by
    whole-second mtime and size, so a same-second, same-size edit would
    otherwise run the old code."""
    import importlib.util

    try:
        os.unlink(importlib.util.cache_from_source(path))
    except (OSError, ValueError, NotImplementedError):
        pass
    d, f = os.path.split(path)
    stem = f[:-3] if f.endswith(".py") else f
    cache = os.path.join(d, "__pycache__")
    try:
        names = os.listdir(cache)
    except OSError:
        return
    for n in names:
        if n.startswith(stem + ".") and "-pytest-" in n and n.endswith(".pyc"):
            try:
                os.unlink(os.path.join(cache, n))
            except OSError:
                pass


def _older_than_source(pyc, source):
    """Whether a bytecode cache may have been written before its source last
    changed (the source's inode change time, which no tool can set back).
    File times come from a clock that ticks every few milliseconds, so a
    cache written in the same tick as the change counts as older."""
    try:
        return os.stat(pyc).st_mtime_ns <= os.stat(source).st_ctime_ns
    except OSError:
        return False


_FRESH_GET_CODE = """
def fresh_get_code(self, fullname):
    __tracebackhide__ = True
    path = self.path
    if is_project_file(path):
        try:
            pyc = cache_from_source(path)
        except (NotImplementedError, ValueError):
            pyc = None
        if pyc and older_than_source(pyc, path):
            try:
                unlink(pyc)
            except OSError:
                pass
    return get_code(self, fullname)
"""
_FRESH_GET_CODE_CODE = compile(_FRESH_GET_CODE, "<frozen importlib._bootstrap_external>", "exec")


def _refuse_stale_bytecode():
    """In a child: CPython and pytest accept a .pyc whose whole-second mtime
    and size match its source, so a test module, conftest or project module
    edited within the second after a run cached it, to the same size, would
    run old code. The zygote's own modules are checked against the warm-up
    snapshot; for those a run imports itself, a cache older than its
    source's last change is not used (one stat of each more per import).
    A test module or conftest that is still the file the learning run read
    (same mtime, size, inode and change time) gets the code pytest's
    rewriter made of it there, without reading or rewriting it again."""
    import importlib.machinery
    import importlib.util

    import _pytest.assertion.rewrite as rewrite

    read_pyc = rewrite._read_pyc

    def _read_pyc(source, pyc, trace=lambda x: None):
        __tracebackhide__ = True  # noqa: F841 - not in pytest's tracebacks
        # The learning run's code for the same file, if it is unchanged:
        # what pytest would read from its cache (or make, without one).
        hit = _rewritten_code.get(str(source))
        if hit is not None:
            try:
                if _key(os.stat(source)) == hit[0]:
                    return hit[1]
            except OSError:
                pass
        if _older_than_source(pyc, source):
            return None
        return read_pyc(source, pyc, trace)

    rewrite._read_pyc = _read_pyc
    loader = importlib.machinery.SourceFileLoader
    # Compiled under importlib's own file name: CPython then strips this
    # frame, as the frames around it, from a failing import's traceback.
    ns = {"get_code": loader.get_code, "is_project_file": _is_project_file,
          "cache_from_source": importlib.util.cache_from_source,
          "older_than_source": _older_than_source, "unlink": os.unlink}
    exec(_FRESH_GET_CODE_CODE, ns)
    fresh_get_code = ns["fresh_get_code"]
    loader.get_code = fresh_get_code


def _forget_django_models(modules):
    """Django keeps every model class in its app registry, and registering a
    model of the same name again (a re-imported models module) keeps parts
    of the old one: its auto-created many-to-many models, relations resolved
    against the old classes. Take the models defined in the modules about
    to be re-imported out of the registry first, as a fresh process would
    never have had them."""
    apps_module = sys.modules.get("django.apps")
    if apps_module is None or not modules:
        return
    apps = getattr(apps_module, "apps", None)
    if apps is None or not getattr(apps, "ready", False):
        return
    modules = set(modules)
    try:
        for app_models in apps.all_models.values():
            for key, model in list(app_models.items()):
                if getattr(model, "__module__", None) in modules:
                    del app_models[key]
        apps.clear_cache()
    except Exception:  # noqa: BLE001 - a registry we do not understand stays as it is
        pass


def _forget_registrations(modules):
    """Take what the modules about to be imported again registered out of
    registries that live outside the project, as a fresh process never had
    it: marshmallow's class registry (it keeps the first class registered
    under a name), SQLAlchemy MetaData (it refuses a table defined twice),
    Django admin sites (they refuse a model registered twice; only where
    Django was set up at import, since runs otherwise set it up)."""
    cr = sys.modules.get("marshmallow.class_registry")
    reg = getattr(cr, "_registry", None)
    if isinstance(reg, dict):
        for key, classes in list(reg.items()):
            keep = [c for c in classes if getattr(c, "__module__", None) not in modules]
            if keep:
                reg[key] = keep
            else:
                del reg[key]
    sites = sys.modules.get("django.contrib.admin.sites")
    for site in list(getattr(sites, "all_sites", ())):
        registry = getattr(site, "_registry", None)
        if isinstance(registry, dict):
            for model in list(registry):
                if getattr(model, "__module__", None) in modules or \
                        type(registry[model]).__module__ in modules:
                    del registry[model]
    if "sqlalchemy" in sys.modules:
        for name in modules:
            mod = sys.modules.get(name)
            for obj in list(getattr(mod, "__dict__", {}).values()):
                table = obj if type(obj).__name__ == "Table" else \
                    (getattr(obj, "__table__", None) if isinstance(obj, type) else None)
                if type(table).__module__.startswith("sqlalchemy.") and \
                        type(table).__name__ == "Table":
                    try:
                        table.metadata.remove(table)
                    except Exception:  # noqa: BLE001 - a registry we do not understand
                        pass


def _purge(dirty, inputs=()):
    """Remove the dirty modules (changed on disk), those whose inputs
    changed, and their reverse import closure from sys.modules (and from
    their parent packages), so pytest's collection imports them afresh.
    Returns the purged names."""
    for name in dirty:
        _drop_bytecode(_snapshot[name][0])
    closure = _closure(set(dirty) | set(inputs))
    _forget_django_models(closure)
    _forget_registrations(closure)
    for name in closure:
        sys.modules.pop(name, None)
        parent, _, child = name.rpartition(".")
        pmod = sys.modules.get(parent) if parent else None
        if pmod is not None and getattr(pmod, child, None) is not None:
            try:
                delattr(pmod, child)
            except AttributeError:
                pass
    return closure


def _record_atexit():
    """From the start of warm-up, note the exit handlers imports register
    (logging's shutdown, multiprocessing's clean-up, ...)."""
    import atexit

    register = atexit.register

    def recording_register(func, *args, **kwargs):
        _exit_handlers.append((func, args, kwargs))
        return register(func, *args, **kwargs)

    atexit.register = recording_register
    return lambda: setattr(atexit, "register", register)


def _reset_exit_handlers():
    """A child's exit handlers as a fresh interpreter that imported the same
    modules would have them: those the standard library registered at import
    (they flush and clean up what belongs to this process), not the zygote's
    others (a project module's handler may remove what the zygote made for
    every run). weakref.finalize registers its handler once per process:
    the zygote's objects stay out of it, this run's are finalized at exit."""
    import atexit
    import weakref

    atexit._clear()
    for func, args, kwargs in _exit_handlers:
        mod = (getattr(func, "__module__", None) or "").partition(".")[0]
        if mod in sys.stdlib_module_names and \
                getattr(func, "__func__", None) is not weakref.finalize._exitfunc.__func__:
            atexit.register(func, *args, **kwargs)
    for info in list(weakref.finalize._registry.values()):
        info.atexit = False
    weakref.finalize._registered_with_atexit = False


def child_run(argv, cwd, env):
    """Run pytest in a freshly forked child. Returns the exit code.

    C has already set up fds 0/1/2, the session, signals and the cwd.
    """
    import resource
    import signal

    global _ru0
    _ru0 = resource.getrusage(resource.RUSAGE_SELF)  # for the benchmarks
    profile = env.get("PYTEST_ZYGOTE_PROFILE")
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    # Python's own SIGINT handler, so Ctrl-C becomes KeyboardInterrupt. C reset
    # the dispositions; these two are what CPython sets at start-up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _new_stdio(bool(env.get("PYTHONUNBUFFERED")))
    runner_path = env.pop("PYTEST_ZYGOTE_SYS_PATH", None)
    zygote_env = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    # A pytest this run starts in a subprocess (in the same project) runs in
    # its own process: handed over, it could wait for a run slot this run holds.
    os.environ["PYTEST_ZYGOTE_CHILD"] = str(os.getpid())
    _apply_path(cwd, env)
    _add_runner_path(runner_path)
    _replay_side_effects()
    _apply_interpreter_env(zygote_env, env)
    try:
        _restore_blas_threads(env)
    except Exception:  # noqa: BLE001 - BLAS then stays single-threaded
        pass
    _reset_libraries(cwd)
    sys.argv = [_pytest_main_file()] + list(argv)
    _reset_exit_handlers()
    try:
        dirty = _dirty_modules()
        inputs = _inputs_changed(env)
        stale = sorted(_early.intersection(dirty).union(_early.intersection(inputs)))
        if stale:
            # pytest holds objects of these: importing them again here
            # would leave it running the old ones.
            sys.stderr.write(
                "pytest-zygote: %s changed, and pytest or a plugin imported it before "
                "the project: this zygote cannot run the new code; run again (the "
                "server warms a fresh one when it sees the change)\n" % _snapshot[stale[0]][0])
            return _finish(75)
        if _measures_coverage(argv, env):
            # pytest-cov starts measuring before conftests and test modules
            # are imported; module-level lines of modules imported at
            # warm-up would count as never run. Import the project afresh.
            dirty = list(_snapshot)
        if dirty or inputs:
            global _reloaded, _workaround_pending
            _reloaded = len(_purge(dirty, inputs))
            _workaround_pending = []
            wa = sys.modules.get("pytest_zygote.workaround")
            if wa is not None:
                wa._run(_workaround_pending)
        _refuse_stale_bytecode()
        child_plugins = []
        if os.environ.pop("PYTEST_ZYGOTE_PRACTICE", None):
            child_plugins.append(_CollectBudget())
        # Modules still imported will not warn again by themselves.
        replay = [w for w in _warm_warnings if w[2] in sys.modules]
        if replay or _rewrite_marks:
            child_plugins.append(_ReplayWarmUp(replay))
        import importlib

        importlib.invalidate_caches()
        np_random = sys.modules.get("numpy.random")
        if np_random is not None:
            np_random.seed()
        gc.enable()
        import pytest  # noqa: F401

        code = _pytest_main(child_plugins)
        if _workaround_pending:
            sys.modules["pytest_zygote.workaround"]._finish(_workaround_pending)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    except KeyboardInterrupt:
        _print_exc()
        code = 128 + signal.SIGINT
    except BaseException:
        _print_exc()
        code = 1
    code = _finish(code)
    if profile:
        profiler.disable()
        try:
            profiler.dump_stats(profile)
        except OSError as e:
            sys.stderr.write("pytest-zygote: cannot write the profile to %s: %s\n" % (profile, e))
    if os.environ.get("PYTEST_ZYGOTE_TIMING", "").strip().lower() in ("1", "true", "yes", "on"):
        r = resource.getrusage(resource.RUSAGE_SELF)
        sys.stderr.write("pytest-zygote: child %.1f ms CPU, %d page faults, %d modules reloaded\n"
                         % ((r.ru_utime + r.ru_stime - _ru0.ru_utime - _ru0.ru_stime) * 1000,
                            r.ru_minflt - _ru0.ru_minflt, _reloaded))
        sys.stderr.flush()
    return code


def _measures_coverage(argv, env):
    import shlex

    try:
        args = list(argv) + shlex.split(env.get("PYTEST_ADDOPTS", "")) + list(_warm_addopts)
    except ValueError:
        args = list(argv)
    return any(a.startswith("--cov") for a in args) and "--no-cov" not in args


def _pytest_main(plugins):
    """pytest.console_main, with extra plugins."""
    import pytest

    try:
        code = pytest.main(plugins=plugins)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # As console_main: Python flushes standard streams on exit; redirect
        # what is left to devnull to avoid another BrokenPipeError.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _print_exc():
    """The traceback on stderr, unless stderr is unusable (a test closed it):
    as the interpreter does, a failure to report is not an error of its own."""
    import traceback

    try:
        traceback.print_exc()
    except Exception:
        pass


def _finish(code):
    """What the interpreter would do at exit: join threads, run atexit, flush."""
    import atexit
    import threading

    try:
        threading._shutdown()
    except BaseException:
        pass
    try:
        atexit._run_exitfuncs()
    except BaseException:
        pass
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except BaseException:
            # As Py_RunMain: a standard stream that cannot be flushed at
            # exit (a test closed fd 1, say) makes the exit code 120.
            code = 120
    return int(code) & 0xFF
