"""pytest-xdist workers as forks of the warm zygote.

pytest-xdist starts each worker through an execnet gateway: for `-n N` a
"popen" gateway, which runs `python -u -c BOOTSTRAP` with a pipe on stdin
and stdout and then speaks execnet's protocol over it. Nothing of xdist is
replaced here: a run's child only gives those gateways another "python",
`pytest-zygote worker --root R` (the client puts that command in
PYTEST_ZYGOTE_WORKER_CMD), which asks the server for a child forked from the
warm zygote with the worker's pipes as its stdin and stdout; that child runs
BOOTSTRAP as `python -c` would (python_main). xdist's scheduler, reports,
terminal output, -x/--maxfail, --junitxml and --lf stay xdist's; gateways
the user names with --tx (ssh, socket, popen//python=...) are left alone.
"""

import os
import sys
import types

from . import state


class WarmWorkers:
    """Registered in a run's child when xdist and a worker command are there:
    turns the plain "popen" gateways xdist made of -n (or --tx popen) into
    popen gateways whose python is the worker command."""

    def __init__(self, cmd):
        self.cmd = cmd

    def pytest_configure(self, config):
        # xdist's pytest_cmdline_main made -n N (auto, --maxprocesses) into
        # option.tx; its DSession reads it at session start, after this.
        tx = getattr(config.option, "tx", None)
        if not tx or getattr(config.option, "dist", "no") == "no":
            return
        config.option.tx = [self._warm(spec) for spec in tx]

    def _warm(self, spec):
        count, star, rest = spec.rpartition("*")
        if star and not count.isdigit():
            return spec
        parts = rest.split("//")
        if parts[0] != "popen" or any(p.startswith(("python=", "chdir=")) for p in parts[1:]):
            return spec
        return "%s%s//python=%s" % (count + star, rest, self.cmd)


def plugin_for(argv):
    """The plugin for this run, or None when it cannot start any worker."""
    cmd = state.worker_cmd
    if not cmd or "xdist" not in sys.modules and not _names_xdist(argv):
        return None
    return WarmWorkers(cmd)


def _names_xdist(argv):
    # xdist is usually imported at warm-up (an installed plugin); this is for
    # a run that loads it itself (-p xdist.plugin).
    return any("xdist" in a for a in argv)


def python_main(argv, plugins=()):
    """`python [-u] [-B] -c CODE [ARGS]` in this process: what execnet's
    popen gateway starts; pytest sessions it begins (xdist's worker) get
    plugins, as a run's pytest.main() does. Returns the exit code."""
    code, rest, unbuffered = None, [], False
    for i, a in enumerate(argv):
        if a == "-u":
            unbuffered = True
        elif a == "-B":
            sys.dont_write_bytecode = True
        elif a == "-c" and i + 1 < len(argv):
            code, rest = argv[i + 1], list(argv[i + 2:])
            break
    if code is None:
        sys.stderr.write("pytest-zygote: a worker needs -c CODE\n")
        return 2
    if unbuffered:
        from .child import _new_stdio

        _new_stdio(True)
    sys.argv = ["-c"] + rest
    if sys.path and sys.path[0] == os.getcwd():
        sys.path[0] = ""  # as `python -c` has it
    if plugins:
        _give_plugins(list(plugins))
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = main
    exec(compile(code, "<string>", "exec"), main.__dict__)
    return 0


def _give_plugins(plugins):
    # xdist.remote, which execnet sends as source and the worker executes,
    # imports _prepareconfig from _pytest.config then, and makes its Config
    # with _prepareconfig(args, None).
    import _pytest.config

    prepare = _pytest.config._prepareconfig

    def _prepareconfig(args=None, plugins_=None):
        return prepare(args, list(plugins_ or []) + plugins)

    _pytest.config._prepareconfig = _prepareconfig
