"""Inputs of imports other than code: the environment variables and the
project data files an import read (docs/design.md, "Inputs of imports other
than code"). Sorted at the end of warm-up into those a child follows by
importing again and those that need another zygote; what the supervisor must
watch is reported from here; a child asks which modules' inputs differ.
"""

import os
import sys

from . import state
from .files import is_project_file, stat_key


def sort_inputs():
    """What imports here read besides their code, sorted by who can follow
    a difference: project modules are imported again by a child whose
    environment differs from what they read (state.env_project); for the others
    the supervisor sends the run to a zygote warmed with its environment
    (the E lines of outside_files). With reload = fresh, project modules
    are not imported again in children either."""
    fresh = os.environ.get("PYTEST_ZYGOTE_RELOAD") == "fresh"
    ignore = set(state.blas_limited)
    state.env_project.clear()
    for name in list(state.env_reads):
        reads = {k: v for k, v in state.env_reads[name].items()
                 if k not in ignore and not k.startswith("PYTEST_ZYGOTE_")}
        if name not in sys.modules or not reads:
            del state.env_reads[name]
        elif name in state.snapshot and not fresh:
            state.env_project[name] = reads
            del state.env_reads[name]
        else:
            state.env_reads[name] = reads
    state.data_project.clear()
    for path, (key, mods) in state.data_reads.items():
        mods = {m for m in mods if m in state.snapshot}
        if mods and not fresh:
            state.data_project[path] = (key, mods)


def outside_files():
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
        if not is_project_file(f):
            dirs.add(os.path.dirname(f))
    try:
        sites = site.getsitepackages() + [site.getusersitepackages()]
    except Exception:
        sites = []
    dirs.update(d for d in sites if os.path.isdir(d))
    lines = ["X\t%s\n" % d for d in sorted(dirs)]
    # Inputs of imports (sort_inputs): a change of a P or F file needs a
    # fresh generation; a D file is the child's to follow, like code. E: a
    # variable a module outside the project read, with a digest of its
    # value ("-": unset); a run whose value differs goes to another zygote.
    lines += ["P\t%s\n" % state.snapshot[n][0] for n in sorted(state.early)]
    lines += ["M\t%s\n" % p for p in sorted({e[0] for e in state.snapshot.values()})]
    for path, (key, mods) in sorted(state.data_reads.items()):
        if path in state.data_project:
            lines.append("D\t%s\n" % path)
        elif any(m in sys.modules for m in mods):
            lines.append("F\t%s\n" % path)
    env = {}
    for reads in state.env_reads.values():
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


def inputs_changed(env):
    """Project modules whose import read something this run has otherwise:
    an environment variable with another value (or set where it was not),
    or a project data file changed since."""
    changed = set()
    for name, reads in state.env_project.items():
        for key, value in reads.items():
            if env.get(key) != value:
                changed.add(name)
                break
    for path, (key, mods) in state.data_project.items():
        try:
            same = stat_key(os.stat(path)) == key
        except OSError:
            same = False
        if not same:
            changed.update(mods)
    return changed
