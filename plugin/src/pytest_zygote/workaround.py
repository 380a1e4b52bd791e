"""Workarounds for libraries that keep references to reloaded modules.

When a run re-imports changed project modules, everything outside the
reverse import closure stays as the zygote had it. A library that keeps a
registry of project objects (classes, functions, settings) still holds the
old ones. A workaround repairs that, in the test child, before the changed
modules are imported again: one registered by a module the zygote imported
runs before pytest starts, one registered by a conftest (which every run
executes) runs as soon as the conftest registers it:

    from pytest_zygote.workaround import register_workaround

    @register_workaround("my_library")
    def reset_my_library():
        import my_library
        saved = my_library.registry.copy()
        my_library.registry.clear()
        yield                      # optional: the code after it runs
        my_library.registry.update(saved)   # after the test session

Workarounds run only in a child whose run re-imports modules, and only when
the named library has been imported. A library that has fixed the problem can
switch off the workarounds registered for it by shipping an importable
``<library>._clear_zygote_workarounds`` (or, as pytest-hot-reloading named
it, ``<library>._clear_hot_reload_workarounds``) module.
"""

import importlib.util
import sys

__all__ = ["register_workaround"]

# library -> {function's "module.qualname": function}. Keyed by name so that a
# conftest re-executed after a reload replaces its workarounds, not repeats them.
_registry = {}
_done = set()  # keys of the workarounds this child has run


def _pending():
    """In a test child that re-imports modules, the list of generators to
    finish after the session; None elsewhere (the zygote, a child that
    reloads nothing, plain pytest)."""
    z = sys.modules.get("pytest_zygote._zygote")
    return getattr(z, "_workaround_pending", None)


def register_workaround(library):
    """Decorator: run the function as a workaround for ``library``."""
    if not isinstance(library, str) or not library:
        raise TypeError("register_workaround needs the library's module name, e.g. "
                        "@register_workaround('django')")

    def decorate(fn):
        key = "%s.%s" % (getattr(fn, "__module__", "?"), getattr(fn, "__qualname__", fn))
        _registry.setdefault(library, {})[key] = fn
        pending = _pending()
        if pending is not None:
            _apply(library, key, fn, pending)
        return fn

    return decorate


def _cleared(library):
    for name in ("_clear_zygote_workarounds", "_clear_hot_reload_workarounds"):
        try:
            if importlib.util.find_spec("%s.%s" % (library, name)) is not None:
                return True
        except (ImportError, ValueError, AttributeError):
            pass
    return False


def _apply(library, key, fn, pending):
    """Run one workaround, once per child, if its library is imported."""
    if key in _done or library not in sys.modules or _cleared(library):
        return
    _done.add(key)
    result = fn()
    if hasattr(result, "__next__"):
        try:
            next(result)
        except StopIteration:
            return
        pending.append(result)


def _run(pending):
    """Run the workarounds registered so far that apply; the generators
    whose code after ``yield`` must run after the session go to pending."""
    for library, fns in list(_registry.items()):
        for key, fn in list(fns.items()):
            _apply(library, key, fn, pending)


def _finish(pending):
    for gen in reversed(pending):
        try:
            next(gen)
        except StopIteration:
            pass
