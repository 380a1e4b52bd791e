"""Code that runs inside the zygote (warm-up) and inside each test child.

Called from C (src/pyembed.c) only. It must import nothing else from this
package, and it must not leave state behind in the zygote that a run could
observe: everything a child changes dies with the child.
"""

import gc
import io
import os
import pathlib
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
_warm_addopts = []  # the project's ini addopts, as warm-up read them
_import_warnings = {}  # path of a test module or conftest -> warnings its import raised
_replay = set()  # paths whose import warnings this child must raise again
_config_warnings = []  # warnings raised while pytest configured itself at warm-up
_path_modules = {}  # path -> (module, stat key) pytest's import_path gave at warm-up
_edges = {}  # project module -> modules it imported at warm-up
_rdeps = {}  # module -> project modules that import it
_progress_phase = ["starting"]  # warm-up phase, for `start`'s progress line
_progress_due = [0.0]  # monotonic time when progress may be sent again


def _progress(phase=None):
    """Tell a waiting `start` the warm-up phase and how many modules are
    imported: at each new phase and at most every 100 ms in between (the
    import recorder calls this as imports happen)."""
    if phase is not None:
        _progress_phase[0] = phase
    _progress_due[0] = time.monotonic() + 0.1
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
                        if os.stat(cp).st_mtime_ns < st.st_ctime_ns:
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
    """Import what a run will import by running pytest's own collection.

    Returns a dict for the supervisor: modules, seconds, threads, errors.
    Collection errors are not fatal: a run shows them as plain pytest would.
    """
    global _root, _snapshot, _base_path, _zygote_pythonpath
    t0 = time.perf_counter()
    _root = os.path.realpath(root)
    _base_path = list(sys.path)
    os.chdir(_root)
    _progress("scanning project files")
    before = _prewalk(_root)
    # python -m pytest puts the cwd first on sys.path; the zygote's cwd is the root.
    sys.path.insert(0, _root)
    sys.argv = [_pytest_main_file()]
    _progress("importing pytest")
    import pytest

    unwrap = _wrap_import_path()
    unrecord = _record_imports()
    _cache_run_independent_work()
    plugin_state = _PluginState()
    # trylast: the innermost wrapper, inside pytest's own warning capture.
    pytest.hookimpl(hookwrapper=True, trylast=True)(_PluginState.pytest_load_initial_conftests)
    # Collection only: no test code runs in the zygote, and nothing is written
    # to the project's cache.
    args = ["--collect-only", "-qq", "-p", "no:cacheprovider"]
    status = "ok"
    _progress("loading plugins and conftest files")
    try:
        rc = pytest.main(args, plugins=[plugin_state])
        if int(rc) not in (0, 5):
            status = "collection exit code %d" % int(rc)
    except BaseException as e:  # noqa: BLE001 - nothing at warm-up may kill the zygote
        status = "warm-up raised %s: %s" % (type(e).__name__, e)
    unwrap()
    unrecord()
    _restore_plugin_state(plugin_state.saved)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass

    _progress("freezing")
    _freeze_distributions()
    _snapshot = _take_snapshot(before)
    for path, (mod, _) in list(_path_modules.items()):
        key = before.get(path)
        if key is None:
            try:
                key = _key(os.stat(path))
            except OSError:
                del _path_modules[path]
                continue
        _path_modules[path] = (mod, key)
    _rdeps.clear()
    for importer, imported in _edges.items():
        if importer in _snapshot:
            for name in imported:
                if name != importer:
                    _rdeps.setdefault(name, set()).add(importer)
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


_RECORDING_IMPORT = """
def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
    module = original_import(name, globals, locals, fromlist, level)
    try:
        if monotonic() >= progress_due[0]:
            progress()
        f = globals.get("__file__") if globals else None
        if f and f.startswith(prefix):
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


class _PluginState:
    """A warm-up plugin that keeps a copy of every list, dict and set at the
    top level of each third-party plugin module, as pytest registers it
    (right after its import, before its hooks run).

    Warm-up runs a whole pytest session in the zygote, and plugins keep
    session state in module globals (pytest-django appends to a module-level
    list in pytest_load_initial_conftests). Put back after warm-up, each child
    starts from the state a fresh import gives, as a cold run would."""

    def __init__(self):
        self.saved = []
        self._seen = set()

    def pytest_collection(self, session):
        _progress("collecting tests")

    def pytest_load_initial_conftests(self, early_config):
        """A hook wrapper (marked in warmup()): record the warnings raised
        while plugins set themselves up (pytest-django's django.setup()
        imports Django here). In a child those imports do not happen again.
        Conftest import warnings are recorded by the import_path wrapper."""
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        _config_warnings[:] = caught

    def pytest_configure(self, config):
        _warm_addopts[:] = config.getini("addopts")

    def pytest_plugin_registered(self, plugin, manager):
        name = getattr(plugin, "__name__", None)
        if not isinstance(plugin, type(sys)) or name in self._seen:
            return
        if name.split(".")[0] in ("_pytest", "pytest", "pluggy", "pytest_zygote"):
            return
        if _is_project_file(os.path.abspath(getattr(plugin, "__file__", "") or "")):
            return
        self._seen.add(name)
        for key, value in list(vars(plugin).items()):
            # Not __builtins__ (the builtins module's dict) or other dunders:
            # only the module's own state.
            if key.startswith("__") or type(value) not in (list, dict, set):
                continue
            self.saved.append((value, type(value)(value)))


def _restore_plugin_state(saved):
    for obj, copy in saved:
        if isinstance(obj, list):
            obj[:] = copy
        else:
            obj.clear()
            obj.update(copy)


def _reset_libraries(cwd):
    """Libraries that compute a default from the process at import time.
    hypothesis puts its example database under the cwd it was imported in
    (the root, in the zygote) and caches HYPOTHESIS_STORAGE_DIRECTORY once
    read: point both back at this run's cwd and environment."""
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
          "importlib": importlib, "monotonic": time.monotonic, "progress": _progress,
          "progress_due": _progress_due}
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


def _wrap_import_path():
    """Warnings a test module or conftest raises while it is imported belong
    to every run's collection, but in a child that reuses the module the
    import does not happen again. Record them at warm-up and raise them
    again, under the run's own warning filters, when pytest asks for the
    module in a child that did not re-import it."""
    import warnings

    import _pytest.config
    import _pytest.pathlib
    import _pytest.python

    original = _pytest.pathlib.import_path

    def import_path(path, *args, **kwargs):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mod = original(path, *args, **kwargs)
        if caught:
            _import_warnings[str(path)] = caught
        if _is_project_file(str(path)):
            _path_modules[str(path)] = (mod, None)
        return mod

    # Only during warm-up: in a child the wrapper's frame would show up in
    # the tracebacks of import errors.
    for module in (_pytest.python, _pytest.config):
        if getattr(module, "import_path", None) is original:
            module.import_path = import_path
    return lambda: [setattr(m, "import_path", original)
                    for m in (_pytest.python, _pytest.config)
                    if getattr(m, "import_path", None) is import_path]


_REUSING_IMPORT_PATH = """
def import_path(path, *args, mode=ImportMode.prepend, **kwargs):
    __tracebackhide__ = True  # not in the tracebacks of import errors
    mode = ImportMode(mode)
    mod = reusable.get(str(path))
    if mod is None:
        return original(path, *args, mode=mode, **kwargs)
    if mode is not ImportMode.importlib:
        pkg_path = resolve_package_path(path)
        if pkg_path is not None:  # pytest reuses a package's module itself
            return original(path, *args, mode=mode, **kwargs)
        # A rootless conftest.py: what import_path does besides executing it.
        pkg_root = str(path.parent)
        if mode is ImportMode.append:
            if pkg_root not in sys.path:
                sys.path.append(pkg_root)
        elif pkg_root != sys.path[0]:
            sys.path.insert(0, pkg_root)
    del reusable[str(path)]
    sys.modules[mod.__name__] = mod
    return mod
"""
# Compiled once, in the zygote: children only execute it.
_REUSING_IMPORT_PATH_CODE = compile(_REUSING_IMPORT_PATH, "<pytest_zygote import_path>", "exec")


def _reuse_reexecuted_modules():
    """pytest executes some modules again on every run even when they are
    imported already: rootless conftest.py files (it removes `conftest`
    from sys.modules first) and, with --import-mode=importlib, every test
    module and conftest. In a child that purged nothing, give pytest the
    module warm-up imported from the same, unchanged file instead. Returns
    the paths that will be reused."""
    import _pytest.config
    import _pytest.pathlib
    import _pytest.python

    reusable = {}
    for path, (mod, key) in _path_modules.items():
        try:
            if _key(os.stat(path)) != key:
                continue
        except OSError:
            continue
        reusable[path] = mod
    if not reusable:
        return (), None
    original = _pytest.pathlib.import_path
    ns = {"reusable": reusable, "original": original, "sys": sys,
          "ImportMode": _pytest.pathlib.ImportMode,
          "resolve_package_path": _pytest.pathlib.resolve_package_path}
    exec(_REUSING_IMPORT_PATH_CODE, ns)
    wrapper = ns["import_path"]
    for module in (_pytest.python, _pytest.config):
        if getattr(module, "import_path", None) is original:
            module.import_path = wrapper

    def restore():
        for module in (_pytest.python, _pytest.config):
            if getattr(module, "import_path", None) is wrapper:
                module.import_path = original

    return list(reusable), restore


class _RestoreImportPath:
    """A plugin for children: once collection is over, pytest's own
    import_path is back, so tests see pytest as plain pytest has it."""

    def __init__(self, restore):
        self._restore = restore

    def pytest_collection_finish(self, session):
        self._restore()


class _ReplayImportWarnings:
    """A plugin for children: raise again, under the run's own filters, the
    warnings that importing a reused test module or conftest raised at
    warm-up, when its collection starts (pytest's collect-time warning
    capture is active then). Conftest warnings come with the first collector.
    Warnings of the config phase come back in that phase, before any plugin
    sets itself up, when the module that raised them is still imported; one
    this child purged raises them itself when it is imported again."""

    def __init__(self, config_warnings=()):
        self._config_warnings = config_warnings

    def pytest_load_initial_conftests(self, early_config):
        import warnings

        for w in self._config_warnings:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno,
                                   source=w.source)

    def pytest_collectstart(self, collector):
        import warnings

        path = str(getattr(collector, "path", ""))
        keys = [path] if path in _replay else []
        if not getattr(self, "_conftests_done", False):
            self._conftests_done = True
            keys += [p for p in _replay if os.path.basename(p) == "conftest.py"]
        for key in keys:
            _replay.discard(key)
            for w in _import_warnings.get(key, ()):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno,
                                       source=w.source)


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
    return "".join("X\t%s\n" % d for d in sorted(dirs))


def _pytest_main_file():
    # sys.argv[0] under `python -m pytest` is pytest/__main__.py; argparse
    # uses its basename in usage lines, so match it.
    import importlib.util

    spec = importlib.util.find_spec("pytest.__main__")
    return spec.origin if spec and spec.origin else "pytest"


def _new_stdio():
    """Recreate sys.std* on fds 0/1/2 (now the client's), as CPython's create_stdio does."""
    old_out = sys.__stdout__ or sys.stdout
    enc = getattr(old_out, "encoding", None) or "utf-8"
    errors = getattr(old_out, "errors", None) or "strict"
    old_in = sys.__stdin__ or sys.stdin
    in_errors = getattr(old_in, "errors", None) or errors

    def make(fd, mode, name, errs, line):
        raw = io.FileIO(fd, mode, closefd=False)
        raw.name = name
        buf = io.BufferedReader(raw) if mode == "rb" else io.BufferedWriter(raw)
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


def _apply_interpreter_env(old, new):
    """The few interpreter-start variables that can still follow the client."""
    sys.dont_write_bytecode = bool(new.get("PYTHONDONTWRITEBYTECODE"))
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


def _purge(dirty):
    """Remove the dirty modules and their reverse import closure from
    sys.modules (and from their parent packages), so pytest's collection
    imports them afresh. Returns the purged names."""
    for name in dirty:
        _drop_bytecode(_snapshot[name][0])
    closure = _closure(dirty)
    _forget_django_models(closure)
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


def child_run(argv, cwd, env):
    """Run pytest in a freshly forked child. Returns the exit code.

    C has already set up fds 0/1/2, the session, signals and the cwd.
    """
    import atexit
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
    _new_stdio()
    zygote_env = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    _apply_path(cwd, env)
    _apply_interpreter_env(zygote_env, env)
    _reset_libraries(cwd)
    sys.argv = [_pytest_main_file()] + list(argv)
    # The zygote's atexit handlers are not this run's.
    atexit._clear()
    try:
        dirty = _dirty_modules()
        if _measures_coverage(argv, env):
            # pytest-cov starts measuring before conftests and test modules
            # are imported; module-level lines of modules imported at
            # warm-up would count as never run. Import the project afresh.
            dirty = list(_snapshot)
        pending = []
        if dirty:
            global _reloaded
            _reloaded = len(_purge(dirty))
            pending = _workarounds()
        child_plugins = []
        if not dirty and _path_modules:
            reused, restore = _reuse_reexecuted_modules()
            if restore is not None:
                child_plugins.append(_RestoreImportPath(restore))
            # Their import warnings come back as for other reused modules.
            _replay.update(p for p in reused if p in _import_warnings)
        config_warnings = []
        if _import_warnings or _config_warnings:
            # Modules still imported will not warn again by themselves.
            loaded = {getattr(m, "__file__", None) for m in list(sys.modules.values())}
            _replay.update(p for p in _import_warnings if p in loaded)
            config_warnings = [w for w in _config_warnings
                               if w.filename in loaded or not _is_project_file(w.filename)]
        import importlib

        importlib.invalidate_caches()
        np_random = sys.modules.get("numpy.random")
        if np_random is not None:
            np_random.seed()
        gc.enable()
        import pytest

        if _replay or config_warnings:
            child_plugins.append(_ReplayImportWarnings(config_warnings))
        code = _pytest_main(child_plugins)
        if pending:
            sys.modules["pytest_zygote.workaround"]._finish(pending)
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
    if os.environ.get("PYTEST_ZYGOTE_TIMING"):
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


def _workarounds():
    """Run the registered workarounds (pytest_zygote.workaround) after a reload."""
    wa = sys.modules.get("pytest_zygote.workaround")
    return wa._run() if wa is not None else []


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
