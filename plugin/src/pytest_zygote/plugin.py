"""pytest plugin: hand an ordinary ``pytest`` invocation over to the zygote.

Enabled explicitly with ``-p pytest_zygote.plugin`` (on the command line, in
``addopts`` or in ``PYTEST_ADDOPTS``), or loaded by pytest from the
``pytest11`` entry point of an installed distribution. As soon as pytest has
parsed the command line (before conftest files are imported), the plugin
replaces the pytest process with ``pytest-zygote run`` for the project's
rootdir, with the same arguments, environment, working directory and
terminal, so the run's exit code is pytest's own. Inside the zygote and its
test children the plugin does nothing.

Loaded only by the entry point (every pytest run of an environment where the
package is installed), it hands over only when the project uses a zygote: one
is running for the rootdir, or a zygote flag or start-if-needed setting asks
for one. Otherwise pytest runs as if the plugin were absent.

pytest-hot-reloading's options and ``PYTEST_DAEMON_*`` variables are accepted
with the same meanings; those that mean nothing here are accepted and said so.

PYTEST_DONT_REWRITE: no assertions here, and nothing to write a cache for.
"""

import copy
import os
import shlex
import subprocess
import sys
import types

import pytest

from pytest_zygote._handover import (
    _TRUE,
    _binary,
    _env_bool,
    _interpreter_flags,
    _interpreter_of,
    _PLUGINS,
    _plugin_names,
    _other_build,
    _probe,
    _running,
    _strip_own,
    _this_interpreter,
)

# Accepted for pytest-hot-reloading users, meaningless here: (option, env, why).
_NO_MEANING = (
    ("pytest_name", "PYTEST_DAEMON_PYTEST_NAME", "--pytest-name",
     "the zygote embeds the interpreter; there is no pytest executable to name"),
    ("daemon_timeout", "PYTEST_DAEMON_TIMEOUT", "--daemon-timeout",
     "start waits until the zygote is warm or fails with the reason"),
    ("daemon_do_not_autowatch_fixtures", "PYTEST_DAEMON_DO_NOT_AUTOWATCH_FIXTURES",
     "--daemon-do-not-autowatch-fixtures",
     "every imported project file is checked before each run"),
)


def _in_zygote():
    z = sys.modules.get("pytest_zygote._zygote")
    return z is not None and getattr(z, "_root", None) is not None


def _tracer_active():
    """Why this process must keep its run (a tracer would not follow it into
    the zygote), in words, or None."""
    if "debugpy" in sys.modules or "pydevd" in sys.modules:
        return "a debugger is active"
    tracer = sys.gettrace()
    if tracer is None:
        return None
    owner = getattr(type(tracer), "__module__", "") or getattr(tracer, "__module__", "") or ""
    if owner.partition(".")[0] == "coverage":
        return "coverage is measuring this process"
    return "a trace function is set (a debugger, coverage or a profiler)"


def _plugin_objects(early_config):
    """Plugins given to pytest.main(plugins=...) (IDE runners do this): names
    and modules travel to the child as ``-p NAME``; other objects (class
    instances) cannot cross to another process. Returns (names, others)."""
    names, others = [], []
    for p in early_config.invocation_params.plugins or ():
        if isinstance(p, str):
            names.append(p)
        elif isinstance(p, types.ModuleType) and getattr(p, "__file__", None):
            if p is not sys.modules.get(__name__):
                names.append(p.__name__)
        else:
            others.append(getattr(p, "__qualname__", None) or type(p).__qualname__)
    return names, others


def pytest_addoption(parser):
    g = parser.getgroup("zygote", "pytest-zygote: run in a fork of a warm zygote")
    add = g.addoption
    add("--zygote-start", "--daemon", dest="zygote_start", action="store_true",
        help="start the zygote for this project (replacing a running one), then exit")
    add("--zygote-stop", "--stop-daemon", dest="zygote_stop", action="store_true",
        help="stop the zygote for this project, then exit")
    add("--zygote-status", dest="zygote_status", action="store_true",
        help="show the zygote's status, then exit")
    add("--zygote-start-if-needed", "--daemon-start-if-needed", dest="zygote_start_if_needed",
        action="store_true", help="start the zygote first when none is running")
    add("--zygote-disable", "--daemon-disable", dest="zygote_disable", action="store_true",
        help="run in this process, as if the plugin were absent")
    add("--zygote-force", dest="zygote_force", action="store_true",
        help="hand over even when a debugger is active")
    add("--zygote-require", dest="zygote_require", action="store_true",
        help="fail (exit 69) instead of running in this process when no zygote is running")
    add("--zygote-instance", dest="zygote_instance", default=None,
        help="select a separate zygote for the same project (any name or number)")
    add("--daemon-port", dest="daemon_port", default=None,
        help="pytest-hot-reloading's daemon port: accepted and ignored (launch.json files "
             "carry its default), unless PYTEST_ZYGOTE_PORT_INSTANCES=1 makes each port a "
             "separate zygote, like --zygote-instance")
    add("--daemon-watch-globs", dest="daemon_watch_globs", default=None,
        help="colon-separated globs of files to watch (when starting)")
    add("--daemon-ignore-watch-globs", dest="daemon_ignore_watch_globs", default=None,
        help="colon-separated globs never to watch (when starting)")
    add("--daemon-use-os-events", dest="daemon_use_os_events", action="store_true",
        help="watch with OS events (inotify), as pytest-hot-reloading's flag; the default "
             "here (PYTEST_DAEMON_USE_OS_EVENTS=false polls instead)")
    add("--daemon-poll-throttle", dest="daemon_poll_throttle", default=None,
        help="seconds between polls when polling (when starting)")
    add("--pytest-name", dest="pytest_name", default=None, help="accepted; has no meaning here")
    add("--daemon-timeout", dest="daemon_timeout", default=None,
        help="accepted; has no meaning here")
    add("--daemon-do-not-autowatch-fixtures", dest="daemon_do_not_autowatch_fixtures",
        action="store_true", help="accepted; has no meaning here")


def _setting(ns, dest, *envs):
    v = getattr(ns, dest, None)
    if v not in (None, False):
        return v
    for e in envs:
        if os.environ.get(e):
            return os.environ[e]
    return None


def _start_env(ns):
    """The environment for a zygote this invocation starts."""
    env = dict(os.environ)
    # pytest-hot-reloading's globs keep its meaning: relative ones from the
    # directory pytest runs in, '*' crossing '/' (the server matches them
    # against whole absolute paths; see docs/plugin.md).
    for dest, var in (("daemon_watch_globs", "PYTEST_DAEMON_WATCH_GLOBS"),
                      ("daemon_ignore_watch_globs", "PYTEST_DAEMON_IGNORE_WATCH_GLOBS")):
        value = _setting(ns, dest, var)
        if value:
            env[var] = ":".join(os.path.abspath(os.path.expanduser(g))
                                for g in value.split(":") if g)
    os_events = _setting(ns, "daemon_use_os_events", "PYTEST_DAEMON_USE_OS_EVENTS")
    if os_events is not None and str(os_events).strip().lower() not in _TRUE:
        throttle = _setting(ns, "daemon_poll_throttle", "PYTEST_DAEMON_POLL_THROTTLE")
        try:
            ms = max(10, int(float(throttle) * 1000)) if throttle else 1000
        except ValueError:
            raise pytest.UsageError("--daemon-poll-throttle needs seconds, not %r" % throttle)
        env["PYTEST_ZYGOTE_POLL_MS"] = str(ms)
    return env


def _say(early_config, text):
    """A line on the real stderr: pytest captures it while this hook runs."""
    capman = early_config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        sys.stderr.write(text)
        return
    with capman.global_and_fixture_disabled():
        sys.stderr.write(text)
        sys.stderr.flush()


def _named_explicitly(args):
    """Was the plugin named with -p (command line, addopts, PYTEST_ADDOPTS) or
    PYTEST_PLUGINS, rather than only loaded from the pytest11 entry point?
    (pytest resolves `-p pytest_zygote.plugin` through that entry point too,
    so the plugin manager cannot tell the two apart.)"""
    return _plugin_names(args)[0] or any(
        n.strip() in _PLUGINS for n in os.environ.get("PYTEST_PLUGINS", "").split(","))


def _merged_args(config):
    """The arguments pytest is parsing: the ini file's addopts, then
    PYTEST_ADDOPTS, then the command line (as Config._preparse puts them)."""
    args = list(config.invocation_params.args)
    env = os.environ.get("PYTEST_ADDOPTS")
    if env:
        args = shlex.split(env) + args
    return list(config.getini("addopts")) + args


def pytest_plugin_registered(plugin, manager):
    """Decide as early as pytest allows. pytest replays this hook for the
    plugins registered before this one, the config object among them. When
    this plugin is registered (by a -p argument or the pytest11 entry point)
    pytest has found the rootdir and read the ini file, but has not yet
    imported the other installed plugins (a large part of a cold start) nor
    any conftest, and captures nothing yet."""
    if not isinstance(plugin, pytest.Config) or _in_zygote():
        return
    config = plugin
    try:
        config.rootpath  # noqa: B018 - set once the ini file is read
        args = _merged_args(config)
        ns = config._parser.parse_known_args(args, namespace=copy.copy(config.option))
    except Exception:  # registered before the ini file was read: decide later
        return
    _decide(config, ns, args)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    if _in_zygote() or getattr(early_config, "_pytest_zygote_decided", False):
        return
    _decide(early_config, early_config.known_args_namespace, args)


def _decide(early_config, ns, args):
    """Hand the invocation over (exec, never returns), run a --zygote-*
    command, or return to let pytest run in this process."""
    early_config._pytest_zygote_decided = True
    for dest, env, opt, why in _NO_MEANING:
        if getattr(ns, dest, None) or os.environ.get(env):
            _say(early_config, "pytest-zygote: %s (%s) has no meaning here: %s\n"
                 % (opt, env, why))
    if ns.zygote_disable or _env_bool("PYTEST_DAEMON_DISABLE") or _env_bool(
            "PYTEST_ZYGOTE_DISABLE"):
        return
    if _plugin_names(args)[1]:
        return  # -p no:pytest_zygote.plugin after the -p that loaded it
    admin = ns.zygote_start or ns.zygote_stop or ns.zygote_status
    start_if_needed = ns.zygote_start_if_needed or _env_bool(
        "PYTEST_DAEMON_START_IF_NEEDED") or _env_bool("PYTEST_ZYGOTE_START_IF_NEEDED")
    instance = _setting(ns, "zygote_instance", "PYTEST_ZYGOTE_INSTANCE")
    if instance is None and _env_bool("PYTEST_ZYGOTE_PORT_INSTANCES"):
        instance = _setting(ns, "daemon_port", "PYTEST_DAEMON_PORT")
    if os.environ.get("PYTEST_ZYGOTE_CHILD") and not admin:
        # A pytest started by a test of a zygote run: nested, it runs here.
        return
    if os.environ.get("PYTEST_XDIST_WORKER") and not admin:
        # An xdist worker: its controller was handed over already, or runs
        # in its own process; either way the worker runs where it is.
        return
    # What the pytest-zygote program says about the server for the root (and
    # the project's settings): one exec of it, about a millisecond.
    probe = _probe(early_config.rootpath, instance)
    st = _running(probe)
    if not (admin or start_if_needed or ns.zygote_force) and st is None:
        # No zygote (and none to start): run here, exactly as without the
        # plugin, so that a committed addopts never breaks plain pytest.
        section = probe.get("probe.config") if probe else None
        section_start = bool(probe) and probe.get("probe.start_if_needed") == "1"
        if not section_start:
            if ns.zygote_require or _env_bool("PYTEST_ZYGOTE_REQUIRE"):
                _say(early_config, "pytest-zygote: no zygote is running for %s; start one with: "
                     "pytest --zygote-start (--zygote-require asks for one)\n"
                     % early_config.rootpath)
                os._exit(69)
            if (section or _named_explicitly(args)) and getattr(ns, "verbose", 0) >= 0:
                _say(early_config, "pytest-zygote: no zygote is running for %s; running in "
                     "this process (pytest --zygote-start starts one)\n"
                     % early_config.rootpath)
            return
    why = None if admin or ns.zygote_force else _tracer_active()
    if why:
        _say(early_config, "pytest-zygote: %s; running in this process "
             "(--zygote-force hands over anyway)\n" % why)
        return
    flags = [] if admin or ns.zygote_force else _interpreter_flags()
    if flags:
        _say(early_config, "pytest-zygote: this Python runs with %s, which the hand-over cannot "
             "pass on (it sends the environment: PYTHONDEVMODE=1 and the like are); running in "
             "this process\n" % " ".join(flags))
        return
    if not admin:
        # A zygote of another interpreter (the system's, where this is a
        # virtualenv's) would run the tests with other packages.
        theirs = st.get("python") if st else None
        if theirs and _interpreter_of(theirs) != _this_interpreter():
            _say(early_config, "pytest-zygote: the zygote for %s runs %s, this pytest runs %s; "
                 "running in this process (start one for this interpreter: %s -m pytest "
                 "--zygote-start)\n" % (early_config.rootpath, theirs, sys.executable,
                                        sys.executable))
            if ns.zygote_require or _env_bool("PYTEST_ZYGOTE_REQUIRE"):
                os._exit(69)
            return
    plugin_names, plugin_objects = _plugin_objects(early_config)
    if not admin and plugin_objects and not ns.zygote_force:
        _say(early_config, "pytest-zygote: pytest.main() was given plugin objects that cannot "
             "be sent to the zygote (%s); running in this process\n" % ", ".join(plugin_objects))
        return
    binary = _binary()
    if binary is None:
        raise pytest.UsageError(
            "pytest-zygote: cannot find the pytest-zygote program; put it on PATH or set "
            "PYTEST_ZYGOTE_BIN (or run with --zygote-disable)")
    other = None if admin or not st else _other_build(st)
    if other:
        _say(early_config, "pytest-zygote: %s; running in this process (pytest --zygote-start "
             "replaces it with this build)\n" % other)
        if ns.zygote_require or _env_bool("PYTEST_ZYGOTE_REQUIRE"):
            os._exit(76)
        return
    common = ["--root", str(early_config.rootpath)]
    if instance:
        common += ["--instance", str(instance)]
    # pytest captures fds 1 and 2 from here on (its capture plugin wraps this
    # hook): give them back, so the client hands over the real terminal.
    capman = early_config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        capman.stop_global_capturing()
    sys.stdout.flush()
    sys.stderr.flush()
    if admin:
        # Not SystemExit: pytest's capture wrapper around this hook would trip
        # over the capture we stopped. The process ends here, as with exec.
        if ns.zygote_stop or ns.zygote_start:
            rc = subprocess.call([binary, "stop", *common],
                                 stderr=subprocess.DEVNULL if ns.zygote_start else None)
            if ns.zygote_stop:
                os._exit(rc)
        if ns.zygote_start:
            os._exit(subprocess.call([binary, "start", *common], env=_start_env(ns)))
        os._exit(subprocess.call([binary, "status", *common]))
    argv = [binary, "run", *common]
    if start_if_needed:
        argv.append("--start-if-needed")
    env = _start_env(ns)
    env["PYTEST_ZYGOTE_HINT"] = "pytest --zygote-start (or add --zygote-start-if-needed)"
    # A runner script (an IDE's) may have put directories on sys.path before
    # it called pytest.main(): the child adds those it lacks (and takes the
    # variable out of its environment).
    import json

    env["PYTEST_ZYGOTE_SYS_PATH"] = json.dumps([p for p in sys.path if isinstance(p, str)])
    plugin_args = [a for name in plugin_names for a in ("-p", name)]
    argv += ["--", *plugin_args, *_strip_own(list(early_config.invocation_params.args))]
    os.execve(binary, argv, env)
