"""`pytest-zygote run --affected`: of the tests a run's arguments select,
run only those whose outcome can have changed since each last ran
(docs/usage.md, "run --affected").

A run records what each test module depends on, in this child, as it
happens: the project modules it imports and what those import (with the
import edges warm-up recorded for modules the zygote imported), the
conftests that apply to it, the project files opened and the project
directories listed, the environment variables read, by its tests, its
fixtures and the modules it reaches. Afterwards every test that ran is
stored with its outcome and a digest of that closure, content hashes
included, in pytest's cache (key "zygote/affected"). The next run selects
a test when its closure changed, when it failed or has no record, and
everything when something no test module can own changed (a configuration
file, pytest's options, a dependency outside the project, a variable or
file read by no test module). Recording only adds: when in doubt a test is
selected.
"""

import hashlib
import importlib.util
import json
import os
import re
import sys
import time

from . import state
from .files import CODE_SUFFIXES, is_project_file

CACHE_KEY = "zygote/affected"
VERSION = 2

# Files at the root whose change can change any test: pytest's configuration.
CONFIG_FILES = ("pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg")
# Variables that change only how pytest prints (or are per run by nature):
# not a reason to run everything when pytest itself reads them.
_DISPLAY_VARS = frozenset((
    "COLUMNS", "LINES", "TERM", "NO_COLOR", "FORCE_COLOR", "PY_COLORS", "CI", "BUILD_NUMBER",
    "PYTEST_THEME", "PYTEST_THEME_MODE", "PYTEST_CURRENT_TEST", "_", "OLDPWD", "SHLVL"))
# pytest options that choose which tests run or how they are shown, not what
# a test does: a difference there keeps the recorded outcomes.
_SELECTION_OPTIONS = frozenset((
    "file_or_dir", "keyword", "markexpr", "lf", "last_failed_no_failures", "failedfirst",
    "newfirst", "stepwise", "stepwise_skip", "exitfirst", "maxfail", "verbose", "reportchars",
    "tbstyle", "showlocals", "color", "code_highlight", "xmlpath", "junitprefix", "durations",
    "durations_min", "collectonly", "numprocesses", "maxprocesses", "dist", "tx", "rsyncdir",
    "rsyncignore", "looponfail", "deselect", "ignore", "ignore_glob", "cacheclear", "cacheshow",
    "no_header", "no_summary", "fulltrace", "showcapture", "help", "version", "quiet",
    "continue_on_collection_errors", "report_log", "resultlog", "pastebin", "traceconfig",
    "debug", "setupshow", "showfixtures", "show_fixtures_per_test", "markers"))
# Audit events of a process start: what the process reads is not seen here.
_SPAWN_EVENTS = frozenset(("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn",
                           "os.spawn", "os.fork", "os.forkpty"))
# Names a directory's listing leaves out: what runs themselves create.
_NOT_LISTED = frozenset(("__pycache__", ".pytest_cache"))
# A file whose change time is this close to the start of the run (ns), or
# later, may have changed after the run read it: file times come from the
# coarse clock, which ticks every 1/HZ s (4 ms on Debian).
try:
    _RACE_NS = int(time.clock_getres(5) * 1e9) + 1_000_000  # CLOCK_REALTIME_COARSE
except OSError:
    _RACE_NS = 10_000_000

_IMPORT = """
def affected_import(name, globals=None, locals=None, fromlist=(), level=0):
    module = original_import(name, globals, locals, fromlist, level)
    try:
        note(name, globals, fromlist, level)
    except Exception:
        pass
    return module
"""


def conftest_node(path):
    """The node of a conftest file: by path, since conftests outside packages
    share the module name "conftest"."""
    if path.endswith("conftest.py") and os.path.basename(path) == "conftest.py":
        return "@c:" + os.path.abspath(path)
    return None


class Recorder:
    """What this run's code depends on, by node: a project module's name,
    "@c:PATH" for a conftest, "@PATH" for what happened while the test
    module PATH was collected or its tests ran, "" for what no test module
    or project code owns. Each
    node has tokens: "m:MODULE", "f:PATH", "d:DIR", "e:VARIABLE", "s" (it
    started a process)."""

    def __init__(self, start_ns):
        self.root = state.root
        self.prefix = state.root + os.sep
        self.deps = {}
        self.ctx = None
        self.quiet = False
        # Not the project's files: pytest's cache (the default place until
        # the configuration names it) and git's.
        self.skip_prefixes = tuple(os.path.join(self.root, d) + os.sep
                                   for d in (".pytest_cache", ".git"))
        self._project = {}
        self._tops = {}
        self.env0 = dict(os.environ.items())
        self.start_ns = start_ns

    def add(self, node, token):
        s = self.deps.get(node)
        if s is None:
            s = self.deps[node] = set()
        s.add(token)

    def project_file(self, path):
        r = self._project.get(path)
        if r is None:
            r = self._project[path] = path.startswith(self.prefix) and is_project_file(path)
        return r

    def owner(self, f):
        """The project module whose code runs innermost on the stack from f."""
        while f is not None:
            g = f.f_globals
            fn = g.get("__file__")
            if isinstance(fn, str) and fn.startswith(self.prefix) and self.project_file(fn):
                name = g.get("__name__")
                if isinstance(name, str) and not name.startswith("pytest_zygote"):
                    return conftest_node(fn) or name
            f = f.f_back
        return None

    def attribute(self, token, f, glob=True):
        """token for the innermost project code and the context; for the
        global node when there is neither (and glob)."""
        owner = self.owner(f)
        if owner is not None:
            self.add(owner, token)
        if self.ctx is not None:
            self.add(self.ctx, token)
        elif owner is None and glob:
            self.add("", token)

    # --- imports ------------------------------------------------------------

    def note_import(self, name, globals, fromlist, level):
        f = globals.get("__file__") if globals else None
        importer = None
        if isinstance(f, str) and f.startswith(self.prefix):
            importer = globals.get("__name__")
            if level:
                package = globals.get("__package__") or importer.rpartition(".")[0]
                name = importlib.util.resolve_name("." * level + name, package)
        elif level:
            return
        # Only project modules (the standard library and installed packages
        # are "outside": _outside), judged once per top-level name.
        top = name.partition(".")[0]
        ours = self._tops.get(top)
        if ours is None:
            mf = getattr(sys.modules.get(top), "__file__", None) or \
                getattr(sys.modules.get(name), "__file__", None)
            ours = isinstance(mf, str) and self.project_file(os.path.abspath(mf))
            if top in sys.modules:
                self._tops[top] = ours
        if not ours:
            return
        if importer is None and self.ctx is None:
            mf = getattr(sys.modules.get(name), "__file__", None)
            if isinstance(mf, str) and os.path.basename(mf) == "conftest.py":
                return  # pytest loading a conftest: it applies by directory
        tokens = []
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            tokens.append("m:" + ".".join(parts[:i]))
        for item in fromlist or ():
            if item == "*":
                # The submodules __all__ names are imported without __import__.
                for sub in getattr(sys.modules.get(name), "__all__", None) or ():
                    if isinstance(sub, str) and "%s.%s" % (name, sub) in sys.modules:
                        tokens.append("m:%s.%s" % (name, sub))
            elif "%s.%s" % (name, item) in sys.modules:
                tokens.append("m:%s.%s" % (name, item))
        nodes = []
        if importer is not None:
            nodes.append(conftest_node(f) or importer)
        if self.ctx is not None:
            nodes.append(self.ctx)
        if not nodes:
            nodes.append("")
        for node in nodes:
            for t in tokens:
                self.add(node, t)

    def note_import_module(self, module, f):
        name = getattr(module, "__name__", None)
        mf = getattr(module, "__file__", None)
        if isinstance(name, str) and isinstance(mf, str) and self.project_file(mf):
            if self.ctx is None and self.owner(f) is None and \
                    os.path.basename(mf) == "conftest.py":
                return
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                self.attribute("m:" + ".".join(parts[:i]), f)

    def install(self):
        import builtins
        import importlib

        original_import_module = importlib.import_module
        ns = {"original_import": builtins.__import__, "note": self.note_import}
        # Compiled under an importlib._bootstrap name, as the zygote's
        # recorder is (recording.record_imports): warnings.warn skips such
        # frames when it looks for the caller a stacklevel names.
        exec(compile(_IMPORT, "<pytest_zygote importlib._bootstrap affected>", "exec"), ns)
        builtins.__import__ = ns["affected_import"]
        rec = self

        def import_module(name, package=None):
            module = original_import_module(name, package)
            try:
                rec.note_import_module(module, sys._getframe(1))
            except Exception:  # noqa: BLE001 - never in the way of an import
                pass
            return module

        importlib.import_module = import_module
        cls = type(os.environ)

        class Recording(cls):
            def __getitem__(self, key):
                rec.note_env(key)
                return cls.__getitem__(self, key)

            def __iter__(self):
                rec.note_env("*")
                return cls.__iter__(self)

            def copy(self):
                rec.note_env("*")
                return cls.copy(self)

        os.environ.__class__ = Recording
        sys.addaudithook(self.audit)  # this child's only; it ends with the run

    # --- environment, files, processes --------------------------------------

    def note_env(self, key):
        if self.quiet or not isinstance(key, str) or key.startswith("PYTEST_ZYGOTE_") or \
                key == "PYTEST_CURRENT_TEST":  # pytest's, set and read around each test
            return
        try:
            f = sys._getframe(2)
            owner = self.owner(f)
            token = "e:" + key
            if owner is not None:
                self.add(owner, token)
            if self.ctx is not None:
                self.add(self.ctx, token)
            elif owner is None and key not in _DISPLAY_VARS:
                self.add("", token)
        except Exception:  # noqa: BLE001
            pass

    def audit(self, event, args):
        if self.quiet:
            return
        try:
            if event == "open":
                path, mode, flags = args
                if isinstance(path, int) or path is None:
                    return
                if isinstance(mode, str):
                    if any(c in mode for c in "wax") and "+" not in mode:
                        return
                elif isinstance(flags, int) and flags & os.O_ACCMODE == os.O_WRONLY:
                    return
                path = os.path.abspath(os.fsdecode(os.fspath(path)))
                if not path.startswith(self.prefix) or path.endswith(CODE_SUFFIXES) or \
                        path.startswith(self.skip_prefixes) or not self.project_file(path):
                    return
                self.attribute("f:" + path, sys._getframe(1))
            elif event in ("os.listdir", "os.scandir"):
                path = args[0] if args else "."
                if isinstance(path, int):
                    return
                f = sys._getframe(1)
                if f.f_code.co_filename.startswith("<frozen importlib"):
                    return  # the import system's: imports are in the graph
                path = os.path.abspath(os.fsdecode(os.fspath(path if path is not None else ".")))
                if (path + os.sep).startswith(self.prefix) and \
                        not (path + os.sep).startswith(self.skip_prefixes):
                    # pytest's own walks are not a test's: only project code's.
                    self.attribute("d:" + path, f, glob=False)
            elif event in _SPAWN_EVENTS:
                self.attribute("s", sys._getframe(1), glob=False)
        except Exception:  # noqa: BLE001 - never in the way of what is audited
            pass

    # --- closures -------------------------------------------------------------

    def graph(self):
        """The zygote's half: forward edges of modules it imported (import
        statements, and holders of what another module defined), the data
        files and variables their imports read."""
        fwd = {}
        for importer, names in state.edges.items():
            fwd.setdefault(importer, set()).update(names)
        for defining, holders in state.rdeps.items():
            for h in holders:
                fwd.setdefault(h, set()).add(defining)
        data = {}
        for path, entry in state.data_reads.items():
            for m in entry[1]:
                data.setdefault(m, set()).add(path)
        return fwd, data

    def module_file(self, name):
        mod = sys.modules.get(name)
        f = getattr(mod, "__file__", None)
        if not isinstance(f, str):
            entry = state.snapshot.get(name)
            f = entry[0] if entry else None
        if isinstance(f, str):
            f = os.path.abspath(f)
            if self.project_file(f):
                return f
        return None

    def closure(self, nodes, files, graph):
        """Tokens reachable from nodes: files (module files included), dirs,
        variables, and whether a process was started."""
        fwd, data = graph
        tokens = set("f:" + f for f in files)
        seen = set()
        stack = list(nodes)
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            more = set(self.deps.get(node, ()))
            if not node.startswith("@") and node:
                f = self.module_file(node)
                if f is None and node not in self.deps:
                    continue  # not the project's
                if f is not None:
                    tokens.add("f:" + f)
                more.update("m:" + n for n in fwd.get(node, ()))
                more.update("f:" + p for p in data.get(node, ()))
                more.update("e:" + k for k in state.env_project.get(node, ()))
            for t in more:
                if t.startswith("m:"):
                    if t[2:] not in seen:
                        stack.append(t[2:])
                else:
                    tokens.add(t)
        return tokens


class Hashes:
    """Content digests of files and directory listings, with the stat of
    when they were taken as a fast check: a file whose stat is the same is
    not read again. A digest taken within _TRUST_NS of the file's last
    change is not kept (the next change may land in the same clock tick)."""

    _TRUST_NS = 100_000_000

    def __init__(self, table):
        self.table = table if isinstance(table, dict) else {}
        self.memo = {}

    def get(self, token):
        """The digest of "f:PATH" or "d:DIR" now; None when it is missing."""
        if token in self.memo:
            return self.memo[token]
        path = token[2:]
        try:
            st = os.stat(path)
        except OSError:
            self.memo[token] = None
            return None
        key = [st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns]
        cached = self.table.get(token)
        if isinstance(cached, list) and len(cached) == 5 and cached[:4] == key:
            digest = cached[4]
        else:
            try:
                if token.startswith("d:"):
                    names = sorted(n for n in os.listdir(path) if n not in _NOT_LISTED)
                    data = "\0".join(names).encode("utf-8", "surrogateescape")
                else:
                    with open(path, "rb") as f:
                        data = f.read()
            except OSError:
                self.memo[token] = None
                return None
            digest = hashlib.blake2b(data, digest_size=12).hexdigest()
            if time.time_ns() - st.st_ctime_ns > self._TRUST_NS:
                self.table[token] = key + [digest]
            else:
                self.table.pop(token, None)
        self.memo[token] = digest
        return digest

    def changed_since(self, token, start_ns):
        try:
            return os.stat(token[2:]).st_ctime_ns >= start_ns - _RACE_NS
        except OSError:
            return False


def _env_digest(env):
    items = sorted((k, v) for k, v in env.items()
                   if k not in _DISPLAY_VARS and not k.startswith("PYTEST_ZYGOTE_"))
    return hashlib.blake2b(repr(items).encode("utf-8", "surrogateescape"),
                           digest_size=12).hexdigest()


class AffectedPlugin:
    """The pytest plugin of a run with --affected (registered by child.py)."""

    def __init__(self, start_ns):
        self.rec = Recorder(start_ns)
        self.rec.install()
        self.config = None
        self.disabled = None  # why every test runs and nothing is recorded
        self.items = {}  # nodeid -> (test file, test module name or None)
        self.outcomes = {}
        self.summary = None
        self.none_left = False
        self.epoch = [0, ""]  # [number, why]: bumped by every change that selects all
        self.loaded_epoch = None
        self.stack = []
        self.known = set(sys.modules)  # for _new_modules
        self.known_len = len(self.known)

    # --- set-up -------------------------------------------------------------

    def pytest_configure(self, config):
        self.config = config
        if getattr(config.option, "numprocesses", None) or \
                getattr(config.option, "dist", "no") not in ("no", None):
            self.disabled = "--affected does not select with -n (pytest-xdist): every test runs"
        elif getattr(config, "cache", None) is None:
            self.disabled = "no cache (-p no:cacheprovider)"
        cachedir = getattr(getattr(config, "cache", None), "_cachedir", None)
        if cachedir is not None:
            self.rec.skip_prefixes += (str(cachedir) + os.sep,)

    def pytest_sessionstart(self, session):
        if self.disabled and self.disabled.startswith("--affected"):
            tr = self.config.pluginmanager.get_plugin("terminalreporter")
            if tr is not None:
                tr.write_line(self.disabled)

    # --- contexts: which test module is being collected or run ---------------

    def pytest_collectstart(self, collector):
        import pytest

        if isinstance(collector, (pytest.Session, pytest.Package)) or \
                type(collector).__name__ == "Dir":
            return
        path = getattr(collector, "path", None)
        if path is None:
            return
        self._new_modules()
        self.stack.append((collector.nodeid, self.rec.ctx))
        self.rec.ctx = "@" + str(path)

    def pytest_collectreport(self, report):
        if self.stack and self.stack[-1][0] == report.nodeid:
            self._new_modules()
            self.rec.ctx = self.stack.pop()[1]

    def _new_modules(self):
        """Project modules that appeared in sys.modules since the last look,
        however they were imported (the import hooks see most): the
        context's. (Outside contexts the import hooks attribute them: a
        conftest's imports are the conftest's.)"""
        if len(sys.modules) == self.known_len:
            return
        now = set(sys.modules)
        new, self.known, self.known_len = now - self.known, now, len(now)
        if self.rec.ctx is None:
            return
        for name in new:
            f = getattr(sys.modules.get(name), "__file__", None)
            if isinstance(f, str) and self.rec.project_file(os.path.abspath(f)) and \
                    not conftest_node(f):  # conftests apply by directory
                self.rec.add(self.rec.ctx, "m:" + name)

    @__import__("pytest").hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item, nextitem):
        # A plain hook that returns None: it only opens the context, which
        # pytest_runtest_logfinish closes.
        self._new_modules()
        self.rec.ctx = "@" + str(item.path)

    def pytest_runtest_logfinish(self, nodeid, location):
        self._new_modules()
        self.rec.ctx = None

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or report.failed or report.skipped:
            prev = self.outcomes.get(report.nodeid)
            if report.failed:
                self.outcomes[report.nodeid] = "failed"
            elif prev != "failed":
                self.outcomes[report.nodeid] = "skipped" if report.skipped else "passed"

    # --- selection ------------------------------------------------------------

    def _load(self):
        """The stored record, or None when there is none that this version
        can use (then every test runs: a first run)."""
        data = self.config.cache.get(CACHE_KEY, None)
        if not isinstance(data, dict) or data.get("version") != VERSION or \
                not isinstance(data.get("epoch"), int):
            return None
        for key in ("global", "outside", "tests", "closures", "hashes"):
            if not isinstance(data.get(key), dict):
                return None
        if not all(isinstance(c, dict) for c in data["closures"].values()):
            return None
        return data

    def _global_record(self, hashes):
        """What every test depends on, as stored: configuration files and
        what no test module owns (files, variables), pytest's options,
        files outside the project that are imported."""
        rec = self.rec
        files = [os.path.join(rec.root, n) for n in CONFIG_FILES]
        inipath = getattr(self.config, "inipath", None)
        if inipath is not None:
            files.append(str(inipath))
        tokens = rec.closure([""], files, rec.graph())
        for reads in state.env_reads.values():  # variables libraries read at import
            tokens.update("e:" + k for k in reads)
        return self._freeze(tokens, hashes, check_race=True)

    def _options(self):
        opts = {k: v for k, v in sorted(vars(self.config.option).items())
                if k not in _SELECTION_OPTIONS}
        text = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(opts))
        return hashlib.blake2b(text.encode("utf-8", "surrogateescape"),
                               digest_size=12).hexdigest()

    def _outside(self):
        """Imported files outside the project: path -> [mtime, size, inode]."""
        out = {}
        for mod in list(sys.modules.values()):
            f = getattr(mod, "__file__", None)
            if not isinstance(f, str) or self.rec.project_file(f):
                continue
            try:
                st = os.stat(f)
            except OSError:
                continue
            out[f] = [st.st_mtime_ns, st.st_size, st.st_ino]
        return out

    def _freeze(self, tokens, hashes, check_race):
        """A closure's tokens as stored: file and directory digests ("?" for
        one that changed while the run went on: it never matches), variables'
        values at the start of the run."""
        rec = {}
        env0 = self.rec.env0
        for t in sorted(tokens):
            if t == "s":
                rec[t] = "?"
            elif t.startswith("e:"):
                k = t[2:]
                rec[t] = _env_digest(env0) if k == "*" else env0.get(k)
            else:
                digest = hashes.get(t)
                if check_race and digest is not None and \
                        hashes.changed_since(t, self.rec.start_ns):
                    digest = "?"
                rec[t] = digest
        return rec

    def _first_change(self, frozen, hashes):
        """The first token of a stored closure that differs now, or None."""
        env = self.rec.env0
        for t, old in frozen.items():
            if old == "?":
                return t
            if t.startswith("e:"):
                k = t[2:]
                now = _env_digest(env) if k == "*" else env.get(k)
            else:
                now = hashes.get(t)
            if now != old:
                return t
        return None

    def _describe(self, token):
        if token == "s":
            return "starts processes"
        if token.startswith("e:"):
            return "$%s changed" % token[2:] if token != "e:*" else "the environment changed"
        path = token[2:]
        try:
            rel = os.path.relpath(path, str(self.config.rootpath))
        except ValueError:
            rel = path
        if token.startswith("d:"):
            return "%s/ changed (files added or removed)" % rel.rstrip("/")
        return "%s changed" % rel

    def _everything(self, data, hashes):
        """Why every test must run, or None."""
        if data is None:
            return "first run"
        if data.get("options") != self._options():
            return "pytest's options changed"
        t = self._first_change(data.get("global", {}), hashes)
        if t is not None:
            return self._describe(t)
        for f, key in data.get("outside", {}).items():
            try:
                st = os.stat(f)
                same = [st.st_mtime_ns, st.st_size, st.st_ino] == key
            except OSError:
                same = False
            if not same:
                return "%s changed (outside the project)" % f
        return None

    @__import__("pytest").hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session, config, items):
        for item in items:
            mod = getattr(item, "module", None)
            self.items[item.nodeid] = (str(item.path), getattr(mod, "__name__", None))
        total = len(items)
        if self.disabled:
            if not self.disabled.startswith("--affected"):
                self.summary = "%d of %d tests: %s" % (total, total, self.disabled)
            return
        hashes = Hashes(None)
        self.rec.quiet = True
        try:
            data = self._load()
            if data is not None:
                hashes = Hashes(data.get("hashes"))
                self.loaded_epoch = data.get("epoch", 0)
            self.hashes = hashes
            why_all = self._everything(data, hashes)
            if why_all is not None:
                # A new epoch: tests that do not run now (deselected by
                # ARGS) are selected by later runs, as their record is older.
                self.epoch = [data.get("epoch", 0) + 1 if data else 0, why_all]
                self.summary = "%d of %d tests: %s" % (total, total, why_all)
                return
            self.epoch = [data.get("epoch", 0), data.get("epoch_reason", "")]
            tests, closures = data.get("tests", {}), data.get("closures", {})
            selected, deselected = [], []
            changes = {}
            failed = new = 0
            memo = {}
            for item in items:
                rec = tests.get(item.nodeid)
                if not isinstance(rec, list) or len(rec) != 3 or rec[1] not in closures:
                    new += 1
                    selected.append(item)
                    continue
                if rec[2] != self.epoch[0]:
                    d = self.epoch[1] or "changed since"
                    changes[d] = changes.get(d, 0) + 1
                    selected.append(item)
                    continue
                if rec[0] == "failed":
                    failed += 1
                    selected.append(item)
                    continue
                cid = rec[1]
                if cid not in memo:
                    memo[cid] = self._first_change(closures[cid], hashes)
                t = memo[cid]
                if t is None:
                    deselected.append(item)
                else:
                    d = self._describe(t)
                    changes[d] = changes.get(d, 0) + 1
                    selected.append(item)
        finally:
            self.rec.quiet = False
        reasons = [d for d, _ in sorted(changes.items(), key=lambda kv: -kv[1])]
        if len(reasons) > 3:
            reasons = reasons[:2] + ["%d more changes" % (len(reasons) - 2)]
        if failed:
            reasons.append("%d failed last time" % failed)
        if new:
            reasons.append("%d new or not run last time" % new)
        self.summary = "%d of %d tests: %s" % (len(selected), total,
                                                ", ".join(reasons) or "nothing changed")
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = selected
            self.none_left = not selected

    def pytest_report_collectionfinish(self, config, start_path, items):
        return self.summary

    # --- after the run: store what ran ----------------------------------------

    @__import__("pytest").hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session, exitstatus):
        if self.none_left and session.exitstatus == 5:
            session.exitstatus = 0  # nothing to run is success here, not "no tests"
        if self.disabled or self.config.option.collectonly or not self.items:
            return
        if not self.outcomes and self.loaded_epoch == self.epoch[0]:
            return  # nothing ran and nothing new to remember
        self.rec.quiet = True
        try:
            self._store()
        except Exception as e:  # noqa: BLE001 - the next run then selects more
            sys.stderr.write("pytest-zygote: --affected could not store what ran: %r\n" % e)
        finally:
            self.rec.quiet = False

    def _conftests(self):
        out = []
        for p in self.config.pluginmanager.get_plugins():
            f = getattr(p, "__file__", None)
            if isinstance(p, type(sys)) and isinstance(f, str) and \
                    os.path.basename(f) == "conftest.py":
                f = os.path.abspath(f)
                out.append((os.path.dirname(f) + os.sep, f, p.__name__))
        return out

    def _store(self):
        data = self._load() or {}
        hashes = getattr(self, "hashes", None) or Hashes(data.get("hashes"))
        tests = data.get("tests", {}) if isinstance(data.get("tests"), dict) else {}
        closures = data.get("closures", {}) if isinstance(data.get("closures"), dict) else {}
        graph = self.rec.graph()
        conftests = self._conftests()
        frozen_by_file = {}
        for nodeid, outcome in self.outcomes.items():
            path, modname = self.items.get(nodeid, (None, None))
            if path is None:
                continue
            if path not in frozen_by_file:
                nodes = ["@" + path] + ([modname] if modname else [])
                files = [path]
                for d, f, name in conftests:
                    if path.startswith(d):
                        nodes.append("@c:" + f)
                        files.append(f)
                tokens = self.rec.closure(nodes, files, graph)
                frozen = self._freeze(tokens, hashes, check_race=True)
                cid = hashlib.blake2b(json.dumps(frozen, sort_keys=True).encode(),
                                      digest_size=12).hexdigest()
                closures[cid] = frozen
                frozen_by_file[path] = cid
            tests[nodeid] = [outcome, frozen_by_file[path], self.epoch[0]]
        used = {rec[1] for rec in tests.values() if isinstance(rec, list) and len(rec) == 3}
        closures = {k: v for k, v in closures.items() if k in used}
        outside = data.get("outside", {}) if isinstance(data.get("outside"), dict) else {}
        outside.update(self._outside())
        for f in [f for f in outside if not os.path.exists(f)]:
            del outside[f]  # reported once (a new epoch), then forgotten
        files_used = {t for c in closures.values() for t in c}
        glob = self._global_record(hashes)
        files_used.update(glob)
        table = {k: v for k, v in hashes.table.items() if k in files_used}
        self.config.cache.set(CACHE_KEY, {
            "version": VERSION, "epoch": self.epoch[0], "epoch_reason": self.epoch[1],
            "options": self._options(), "global": glob,
            "outside": outside, "tests": tests, "closures": closures, "hashes": table})


def plugin(start_ns=None):
    """The plugin a run with PYTEST_ZYGOTE_AFFECTED=1 registers; it starts
    recording at once, before pytest loads the conftests. start_ns: when the
    run began (time.time_ns()), before its reload step."""
    return AffectedPlugin(start_ns or time.time_ns())
