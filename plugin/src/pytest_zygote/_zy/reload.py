"""Reload in the child: which project modules changed, the reverse import
closure that must be imported again, and purging them from sys.modules and
from the registries that hold what they defined (docs/design.md, "Reload in
the child", "Registries"). The indexes are built at warm-up (state.rdeps,
state.early); a child only reads them and purges its own sys.modules.
"""

import os
import sys

from . import state
from .files import stat_key


def close_pinned():
    """The project modules pytest imported (state.early) and what they import:
    a change there reaches objects pytest holds."""
    stack = [n for n in state.early if n in state.snapshot]
    state.early.clear()
    while stack:
        name = stack.pop()
        if name in state.early or name not in state.snapshot:
            continue
        state.early.add(name)
        stack.extend(state.edges.get(name, ()))
        dotted = name + "."
        stack.extend(m for m in state.snapshot
                     if m.startswith(dotted) and "." not in m[len(dotted):])


def index_importers():
    """At the end of warm-up, once the snapshot is taken: for each module,
    the project modules that import it and those that hold what it defined
    (state.rdeps), which a child's closure follows."""
    state.rdeps.clear()
    state.subs.clear()
    state.by_path.clear()
    for name, entry in state.snapshot.items():
        state.by_path.setdefault(entry[0], []).append(name)
        parent = name.rpartition(".")[0]
        while parent and parent not in state.snapshot:
            parent = parent.rpartition(".")[0]
        if parent:
            state.subs.setdefault(parent, []).append(name)
    for importer, imported in state.edges.items():
        if importer in state.snapshot:
            for name in imported:
                if name != importer:
                    state.rdeps.setdefault(name, set()).add(importer)
    for defining, holders in _registry_edges().items():
        state.rdeps.setdefault(defining, set()).update(holders)


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
    for name in state.snapshot:
        mod = sys.modules.get(name)
        if mod is not None:
            project[name] = mod
    simple = (str, bytes, int, float, complex, bool, type(None), types.ModuleType,
              types.BuiltinFunctionType, types.MethodDescriptorType, types.GetSetDescriptorType)
    held = {}
    for rname, rmod in project.items():
        imported = [project[m] for m in state.edges.get(rname, ()) if m in project and m != rname]
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


def _closure(dirty):
    """The reverse import closure of the dirty modules: them, every project
    module that imports one of them (transitively), and the submodules of
    every package among them (a re-imported package lacks its old submodules
    as attributes)."""
    result = set(dirty)
    stack = list(dirty)
    rdeps, subs = state.rdeps, state.subs
    # Each module is taken from the stack once, each edge followed once:
    # linear in the closure (a scan of the snapshot per module was
    # quadratic: 52 s for a core module of 10,000).
    while stack:
        name = stack.pop()
        for more in (rdeps.get(name, ()), subs.get(name, ())):
            for m in more:
                if m not in result:
                    result.add(m)
                    stack.append(m)
    return result


def dirty_modules(listed=None):
    """Project modules whose file changed since warm-up (see stat_key).
    listed: the files that may have, from the server (PYTEST_ZYGOTE_CHECK,
    newline-separated: every project file changed since this generation
    started and every one its watcher does not cover); only those are
    compared. None: every file is (events were lost, no watcher, or a run
    not handed over by the server)."""
    if listed is None:
        paths = state.by_path
    else:
        paths = {p: state.by_path[p] for p in listed.split("\n") if p in state.by_path}
    dirty = []
    snapshot = state.snapshot
    for path, names in paths.items():
        try:
            key = stat_key(os.stat(path))
        except OSError:
            key = None
        for name in names:
            if key != snapshot[name][1:]:
                dirty.append(name)
    state.checked = len(paths)
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


def purge(dirty, inputs=()):
    """Remove the dirty modules (changed on disk), those whose inputs
    changed, and their reverse import closure from sys.modules (and from
    their parent packages), so pytest's collection imports them afresh.
    Returns the purged names."""
    for name in dirty:
        _drop_bytecode(state.snapshot[name][0])
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
