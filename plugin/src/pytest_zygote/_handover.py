"""What the pytest plugin and the interpreter-start hook both need to decide
a hand-over, without importing pytest: the pytest-zygote program, what it says
about the server of a root (_probe: whether one runs, for which interpreter
and build, and the project's settings), and the settings of this interpreter
that a hand-over cannot pass on.

PYTEST_DONT_REWRITE: the start hook may import this before pytest does.
"""

import os
import sys

_TRUE = ("1", "true", "yes", "on")

# Our options that take a value, and the flags, as they may appear in argv.
_VALUE_OPTS = ("--zygote-instance", "--daemon-port", "--daemon-watch-globs",
               "--daemon-ignore-watch-globs", "--pytest-name", "--daemon-timeout",
               "--daemon-poll-throttle")
_FLAG_OPTS = ("--zygote-start", "--zygote-stop", "--zygote-status", "--zygote-start-if-needed",
              "--zygote-disable", "--zygote-force", "--zygote-require", "--daemon", "--stop-daemon",
              "--daemon-start-if-needed", "--daemon-disable", "--daemon-use-os-events",
              "--daemon-do-not-autowatch-fixtures")


def _env_bool(name):
    return os.environ.get(name, "").strip().lower() in _TRUE


def _env_level(name):
    v = os.environ.get(name, "")
    return int(v) if v.isdigit() else (1 if v else 0)


def _interpreter_flags():
    """Command-line settings of this interpreter that its environment does
    not give (python -X dev, -O, -B, -W ...): the client sends the
    environment, and a zygote started from it would not have them. The
    environment variables (PYTHONDEVMODE=1, PYTHONOPTIMIZE=1, ...) are
    handed over, and a zygote with them serves the run."""
    f, env = sys.flags, os.environ
    found = []
    if sys._xoptions:
        found.append("-X " + ",".join(sorted(sys._xoptions)))
    if f.isolated or f.ignore_environment:
        found.append("-I" if f.isolated else "-E")
    if f.optimize != _env_level("PYTHONOPTIMIZE"):
        found.append("-O")
    if f.verbose != _env_level("PYTHONVERBOSE"):
        found.append("-v")
    for flag, var, opt in (("dont_write_bytecode", "PYTHONDONTWRITEBYTECODE", "-B"),
                           ("no_user_site", "PYTHONNOUSERSITE", "-s"),
                           ("safe_path", "PYTHONSAFEPATH", "-P")):
        if getattr(f, flag, 0) and not env.get(var):
            found.append(opt)
    if f.bytes_warning:
        found.append("-b")
    # Dev mode puts "default" among the warning options itself.
    given = [o for o in sys.warnoptions if not (f.dev_mode and o == "default")]
    if given != [o for o in env.get("PYTHONWARNINGS", "").split(",") if o]:
        found.append("-W " + ",".join(given))
    return found



def _scripts_dir(name):
    import sysconfig

    return os.path.join(sysconfig.get_path("scripts"), name)


def _which(name):
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        p = os.path.join(d or ".", name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def _binary():
    """The pytest-zygote program: PYTEST_ZYGOTE_BIN, else the first found of
    the places below (sysconfig is imported only when the first fails)."""
    b = os.environ.get("PYTEST_ZYGOTE_BIN")
    if b:
        return b
    here = os.path.dirname(os.path.abspath(__file__))
    name = "pytest-zygote"
    for candidate in (
        # installed: <prefix>/lib/pythonX.Y/site-packages/pytest_zygote -> <prefix>/bin
        lambda: os.path.join(here, "..", "..", "..", "..", "bin", name),
        # where pip puts this interpreter's scripts (a virtualenv's bin/)
        lambda: _scripts_dir(name),
        lambda: os.path.join(os.path.dirname(sys.executable), name),
        lambda: _which(name),
        # a source checkout: plugin/src/pytest_zygote -> build/pytest-zygote
        lambda: os.path.join(here, "..", "..", "..", "build", name),
    ):
        path = candidate()
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return os.path.abspath(path)
    return None


def _probe(root, instance=None, binary=None):
    """Ask the pytest-zygote program about the server for root (`pytest-zygote
    probe`: src/client/status.c cmd_probe): {key: value} with probe.server
    (running, none, untrusted, error), probe.config (the file with a
    [pytest-zygote] section, or ""), probe.start_if_needed ("1" when the
    environment or that section says so), probe.build (the program's build)
    and, when a server runs, its status keys (src/supervisor/status.c). The
    program names the socket, checks the runtime directory and the server's
    uid and reads the settings, so none of that is written twice. One
    posix_spawn (about a millisecond; subprocess is not imported). None when
    there is no program or it failed."""
    binary = binary or _binary()
    if binary is None:
        return None
    argv = [binary, "probe", "--root", os.fspath(root)]
    if instance:
        argv += ["--instance", str(instance)]
    r, w = os.pipe()
    try:
        pid = os.posix_spawn(binary, argv, os.environ, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, w, 1),
            (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0)])
    except OSError:
        os.close(r)
        return None
    finally:
        os.close(w)
    chunks = []
    with os.fdopen(r, "rb") as f:
        for chunk in iter(lambda: f.read(65536), b""):
            chunks.append(chunk)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.waitstatus_to_exitcode(status) != 0:
        return None
    text = b"".join(chunks).decode("utf-8", "replace")
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _running(probe):
    """The probe's server status, when a server of ours runs; else None."""
    return probe if probe and probe.get("probe.server") == "running" else None


def _other_build(probe):
    """None when the program and the probed server are one build, else what
    to say about the server: a run would refuse to run there (exit 76)."""
    mine = probe.get("probe.build")
    if not mine or probe.get("build") == mine:
        return None
    theirs = probe.get("build") or "an older build"
    return "the zygote is another build of pytest-zygote (server: %s %s; this one: %s)" % (
        probe.get("version", "?"), theirs, mine)


def _interpreter_of(python):
    """What makes two interpreters the same for a run: the binary and the
    virtualenv (None outside one)."""
    python = os.path.abspath(python)
    env = os.path.dirname(os.path.dirname(python))
    venv = os.path.realpath(env) if os.path.exists(os.path.join(env, "pyvenv.cfg")) else None
    return os.path.realpath(python), venv


def _this_interpreter():
    venv = os.path.realpath(sys.prefix) if sys.prefix != sys.base_prefix else None
    return os.path.realpath(sys.executable), venv


def _strip_own(args):
    """argv without this plugin's options (the child may not load the plugin)."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a in _FLAG_OPTS:
            continue
        if a in _VALUE_OPTS:
            skip = True
            continue
        if a.startswith(tuple(o + "=" for o in _VALUE_OPTS)):
            continue
        out.append(a)
    return out


# The module names that load this plugin.
_PLUGINS = ("pytest_zygote.plugin", "pytest_hot_reloading.plugin")


def _plugin_names(args):
    """(named, disabled): is this plugin named with -p, and is it blocked
    with -p no:NAME (which unregisters it even after an earlier -p)?"""
    named = disabled = False
    for i, a in enumerate(args):
        if a == "-p" and i + 1 < len(args):
            name = args[i + 1]
        elif a.startswith("-p") and len(a) > 2:
            name = a[2:]
        else:
            continue
        if name.startswith("no:"):
            disabled = disabled or name[3:] in _PLUGINS + ("pytest_zygote", "pytest_hot_reloading")
        named = named or name in _PLUGINS
    return named, disabled
