"""Work pytest repeats in every session, done once: caches of hook
signatures and fixture scans filled at warm-up, a parser reused within a
session, the config a spare builds before its request, distribution metadata
read once, and the code pytest's rewriter made in the learning run executed
again by children for unchanged files (docs/design.md, "Work pytest repeats
in every session, done once"). Each must leave a run's output as pytest's own.
"""

import os
import pathlib
import sys

from . import state
from .files import is_project_file, older_than_source, stat_key


# Versions the run-independent caches below were checked against; with any
# other pytest or pluggy they stay off (the functions they wrap may differ).
_CACHE_TESTED = {"pytest": ("7.2.",), "pluggy": ("1.0.",)}


def cache_run_independent_work():
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
    state.cached[:] = [varnames]

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
            if is_project_file(getattr(holder, "__file__", None) or ""):
                return names  # purged and re-imported in children: no caching
            names = [n for n in names if isinstance(
                fixtures.getfixturemarker(fixtures.safe_getattr(holder, n, None)),
                fixtures.FixtureFunctionMarker)]
            scans[holder] = names
        return list(names)

    fixtures.dir = fixture_dir
    state.cached.append(fixture_dir)

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


def fill_run_caches(plugins):
    """Fill the caches of cache_run_independent_work for the plugins the
    learning run registered (modules, and the classes of plugin objects),
    as a session in this process would have: no session runs here."""
    if len(state.cached) != 2:
        return
    import inspect
    import types

    varnames, fixture_dir = state.cached
    holder = object()
    for kind, module, qualname in plugins:
        obj = sys.modules.get(module)
        if obj is None or is_project_file(os.path.abspath(getattr(obj, "__file__", "") or "")):
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
        spec, state.speculated = state.speculated, None
        if spec is not None and not _excludes_plugins(args) and \
                spec[1] == tuple(os.environ.get(k) for k in _SPECULATION_ENV):
            config = spec[0]
            config.invocation_params = config.InvocationParams(
                args=args or (), plugins=plugins, dir=pathlib.Path.cwd())
            return config
        return original(args, plugins)

    _pytest.config.get_config = get_config
    state.build_config = original


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
    if state.build_config is None or os.environ.get("PYTEST_DEBUG"):
        return
    try:
        env = tuple(os.environ.get(k) for k in _SPECULATION_ENV)
        state.speculated = (state.build_config(None, None), env)
    except Exception:  # noqa: BLE001 - the run will build it and see the error
        state.speculated = None


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


def freeze_distributions():
    """Replace importlib.metadata.distributions() by the list it returns
    now (for this sys.path). Called again with sys.path changed since, it
    lists them again."""
    import importlib.metadata as md

    frozen_for = getattr(md.distributions, "_pytest_zygote", None)
    if frozen_for is not None:
        if frozen_for == sys.path:
            return
        md.distributions = md.distributions._original
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

    distributions._pytest_zygote = list(sys.path)
    distributions._original = original
    md.distributions = distributions


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


def refuse_stale_bytecode():
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
        hit = state.rewritten_code.get(str(source))
        if hit is not None:
            try:
                if stat_key(os.stat(source)) == hit[0]:
                    return hit[1]
            except OSError:
                pass
        if older_than_source(pyc, source):
            return None
        return read_pyc(source, pyc, trace)

    rewrite._read_pyc = _read_pyc
    loader = importlib.machinery.SourceFileLoader
    # Compiled under importlib's own file name: CPython then strips this
    # frame, as the frames around it, from a failing import's traceback.
    ns = {"get_code": loader.get_code, "is_project_file": is_project_file,
          "cache_from_source": importlib.util.cache_from_source,
          "older_than_source": older_than_source, "unlink": os.unlink}
    exec(_FRESH_GET_CODE_CODE, ns)
    fresh_get_code = ns["fresh_get_code"]
    loader.get_code = fresh_get_code
