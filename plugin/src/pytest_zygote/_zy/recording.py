"""What warm-up's imports do, recorded while they happen.

Which project module imports which (state.edges), the environment variables
each import reads (state.env_reads), what imports do to the process beyond
defining modules (os.environ writes, os.chdir, sys.path, atexit handlers) so
that a child can do it again after taking the client's environment, and the
progress lines a waiting `start` shows. Recording only: nothing here decides
what a run does with it.
"""

import os
import sys

from . import state


def progress(phase=None):
    """Tell a waiting `start` the warm-up phase and how many modules are
    imported: at each new phase and every 25 new modules in between (the
    import recorder calls this as imports happen)."""
    if state.progress_phase[0] is None:  # the learning run: the zygote reports
        return
    if phase is not None:
        state.progress_phase[0] = phase
    state.progress_due[0] = len(sys.modules) + 25
    try:
        import _pytest_zygote_c
    except ImportError:  # not in the zygote binary
        return
    try:
        _pytest_zygote_c.progress("phase=%s\nmodules=%d\n" % (state.progress_phase[0],
                                                               len(sys.modules)))
    except Exception:
        pass


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
            state.env_reads.setdefault(n, {}).setdefault(key, value)


class SideEffects:
    """What importing modules here did to the process beyond defining them:
    os.environ writes, os.chdir calls, sys.path entries. A child, whose
    environment, cwd and sys.path are the client's, does the same again
    after setting them, as a cold run whose imports did it would have.
    It also notes the variables each import read (state.env_reads), unless an
    import here wrote them first."""

    def __init__(self):
        self._path_before = list(sys.path)
        environ = os.environ
        ops = state.env_ops
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
            state.chdirs.append(os.getcwd())

        os.chdir = chdir

    def stop(self):
        os.environ.__class__ = self._cls
        os.chdir = self._chdir
        if state.chdirs:
            self._chdir(state.root)
        before = set(self._path_before)
        first = self._path_before[0] if self._path_before else None
        at_front = True
        for p in sys.path:
            if p == first:
                at_front = False
            elif p not in before:
                (state.path_front if at_front else state.path_back).append(p)


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


def record_imports():
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
    prefix = state.root + os.sep

    def add(importer, name):
        parts = name.split(".")
        edges = state.edges.setdefault(importer, set())
        for i in range(1, len(parts) + 1):
            edges.add(".".join(parts[:i]))

    # The wrapper sits in every import's call chain. warnings.warn() skips
    # frames whose file name contains "importlib" and "_bootstrap" when it
    # looks for the caller a stacklevel names, so the wrapper is compiled
    # under such a name: otherwise an import-time warning would be reported
    # at the wrapper instead of at the importing line.
    ns = {"original_import": original_import, "prefix": prefix, "add": add, "sys": sys,
          "importlib": importlib, "progress": progress,
          "progress_due": state.progress_due, "pinned": state.early}
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


def record_atexit():
    """From the start of warm-up, note the exit handlers imports register
    (logging's shutdown, multiprocessing's clean-up, ...)."""
    import atexit

    register = atexit.register

    def recording_register(func, *args, **kwargs):
        state.exit_handlers.append((func, args, kwargs))
        return register(func, *args, **kwargs)

    atexit.register = recording_register
    return lambda: setattr(atexit, "register", register)
