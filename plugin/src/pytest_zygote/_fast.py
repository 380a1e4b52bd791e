"""The interpreter-start hook: hand a ``pytest`` command over to a running
zygote before pytest is imported.

``python3 -m pytest_zygote.hook install`` puts a one-line ``.pth`` file in a
site directory. Python runs that line at every start; for anything that is
not ``python -m pytest ...`` or a ``pytest`` script it compares two list
items and stops. For a pytest command it imports this module, which finds the
rootdir pytest would find (the same walk over the same ini files), checks
that the pytest plugin would hand the run over to a zygote that is running
for that root with this interpreter, and execs ``pytest-zygote run``. In
every other case it returns and pytest starts as usual, where the plugin
decides (and says why it runs in-process, when it does): this module only
takes the cases it can decide exactly, and leaves the rest to the plugin.

PYTEST_DONT_REWRITE: imported before pytest.
"""

import os
import sys

from pytest_zygote import _handover as h

# pytest's own options (7.x, those its rootdir search knows) that take a
# value: their values are not paths to walk up from. nargs="?" ones take the
# next argument unless it looks like an option, as argparse does.
_VALUE = frozenset((
    "--assert", "--basetemp", "--capture", "--code-highlight", "--color", "--confcutdir",
    "--deselect", "--doctest-glob", "--doctest-report", "--durations", "--durations-min",
    "--ignore", "--ignore-glob", "--import-mode", "--junit-prefix", "--junit-xml",
    "--junitprefix", "--junitxml", "--last-failed-no-failures", "--lfnf", "--log-auto-indent",
    "--log-cli-date-format", "--log-cli-format", "--log-cli-level", "--log-date-format",
    "--log-file", "--log-file-date-format", "--log-file-format", "--log-file-level",
    "--log-format", "--log-level", "--maxfail", "--override-ini", "--pastebin", "--pdbcls",
    "--pythonwarnings", "--tb", "--verbosity", "-W", "-k", "-m", "-o", "-p", "-r"))
_OPTIONAL_VALUE = frozenset(("--cache-show", "--debug"))
# Options after which the rootdir is not the walk's, or that the plugin
# handles itself (its own, help and version): left to pytest and the plugin.
_DECLINE = ("-c", "--config-file", "--rootdir", "--pyargs", "-h", "--help", "--version", "-V",
            "--zygote-", "--daemon", "--stop-daemon", "--pytest-name")
# The plugin's flags that change nothing once a zygote is running (taken out
# of the arguments, as the plugin does).
_OURS_OK = frozenset(("--zygote-start-if-needed", "--daemon-start-if-needed", "--zygote-require"))
_CONFIG_NAMES = ("pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg")
# Environment that makes the plugin say something or decide otherwise.
_ENV_DECLINE = ("PYTEST_ZYGOTE_CHILD", "PYTEST_XDIST_WORKER", "PYTEST_ZYGOTE_INSTANCE",
                "PYTEST_DAEMON_PYTEST_NAME", "PYTEST_DAEMON_TIMEOUT",
                "PYTEST_DAEMON_DO_NOT_AUTOWATCH_FIXTURES", "COVERAGE_PROCESS_START")


class _Decline(Exception):
    pass


def pytest_args(argv):
    """The arguments of a pytest command line (sys.orig_argv), or None."""
    if argv[1:3] == ["-m", "pytest"]:
        return argv[3:]
    if argv[1:2] == ["-mpytest"]:
        return argv[2:]
    if len(argv) < 2 or os.path.basename(argv[1]) not in ("pytest", "py.test", "pytest-3",
                                                         "py.test-3"):
        return None
    try:  # a console script of pytest's (pip's and Debian's both call console_main)
        with open(argv[1], "rb") as f:
            if b"console_main" not in f.read(4096):
                return None
    except OSError:
        return None
    return argv[2:]


def _split(args):
    """(options and their values, positional arguments) as pytest's first
    parse sees them: unknown options' values count as positional."""
    opts, pos = [], []
    it = iter(args)
    for a in it:
        if a == "--":
            pos.extend(it)
            break
        if not a.startswith("-") or a == "-":
            pos.append(a)
            continue
        if a in _OURS_OK:
            opts.append(a)
            continue
        if a.split("=", 1)[0] == "--daemon-port" and not h._env_bool(
                "PYTEST_ZYGOTE_PORT_INSTANCES"):
            opts.append(a)  # ignored (docs/plugin.md: coming from pytest-hot-reloading)
            if "=" not in a:
                opts.append(next(it, ""))
            continue
        if a.startswith(_DECLINE) or a.startswith(("-c", "-h", "-V")) and not a.startswith("--"):
            raise _Decline(a + " is left to pytest and the plugin")
        opts.append(a)
        name = a.split("=", 1)[0]
        if "=" in a and name.startswith("--"):
            continue
        if name in _VALUE:
            opts.append(next(it, ""))
        elif len(a) > 2 and a[:2] in _VALUE and not a.startswith("--"):
            pass  # -kEXPR, -pNAME
        elif name in _OPTIONAL_VALUE:
            nxt = next(it, None)
            if nxt is not None and nxt.startswith("-"):
                opts.append(nxt)  # re-examined below as an option
                if nxt.startswith(_DECLINE):
                    raise _Decline(nxt + " is left to pytest and the plugin")
            elif nxt is not None:
                opts.append(nxt)
    return opts, pos


def _ini_section(path, header):
    """The lines of [header] in an ini file, or None without one."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    out, inside, found = [], False, False
    for line in lines:
        s = line.strip()
        if s.startswith("[") and not line[:1].isspace():
            inside = s.split("#")[0].split(";")[0].strip() == header
            found = found or inside
            continue
        if inside:
            out.append(line)
    return out if found else None


def _ini_value(lines, key):
    """A key's value (continuation lines joined) in an ini section."""
    value, on = None, False
    for line in lines:
        s = line.strip()
        if on and line[:1].isspace() and s:
            value += " " + s
            continue
        on = False
        if not s or s.startswith(("#", ";")) or not any(c in s for c in "=:"):
            continue
        sep = min(i for i in (s.find("="), s.find(":")) if i >= 0)
        if s[:sep].strip() == key:
            value, on = s[sep + 1:].strip(), True
    return value


def _config(path):
    """pytest's load_config_dict_from_file, for what is needed here: None
    when the file is not a pytest configuration, else its addopts (a list)."""
    name = os.path.basename(path)
    if name == "pyproject.toml":
        with open(path, "rb") as f:
            raw = f.read()
        if b"ini_options" not in raw:
            return None
        import tomllib  # Python 3.11; earlier ones: left to pytest

        opts = tomllib.loads(raw.decode("utf-8")).get("tool", {}).get("pytest", {}).get(
            "ini_options")
        if opts is None:
            return None
        addopts = opts.get("addopts", "")
        if isinstance(addopts, list):
            return [str(a) for a in addopts]
        return _shlex(str(addopts))
    header = "[tool:pytest]" if name == "setup.cfg" else "[pytest]"
    section = _ini_section(path, header)
    if section is None:
        return [] if name == "pytest.ini" else None
    return _shlex(_ini_value(section, "addopts") or "")


def _shlex(text):
    if not text.strip():
        return []
    import shlex

    return shlex.split(text)


def _locate(dirs):
    """pytest's locate_config: (rootdir, addopts) of the first configuration
    file walking up from each directory, or (None, None)."""
    for d in dirs:
        for base in [d] + _parents(d):
            for name in _CONFIG_NAMES:
                p = os.path.join(base, name)
                if os.path.isfile(p):
                    addopts = _config(p)
                    if addopts is not None:
                        return base, addopts
    return None, None


def _parents(d):
    out = []
    while True:
        up = os.path.dirname(d)
        if up == d:
            return out
        out.append(up)
        d = up


def _common_ancestor(paths, cwd):
    common = None
    for p in paths:
        if not os.path.exists(p):
            continue
        if common is None:
            common = p
        elif p == common or (p + "/").startswith(common.rstrip("/") + "/"):
            continue
        elif (common + "/").startswith(p.rstrip("/") + "/"):
            common = p
        else:
            common = os.path.commonpath([p, common]) or common
    if common is None:
        return cwd
    return os.path.dirname(common) if os.path.isfile(common) else common


def rootdir(pos, cwd):
    """pytest 7's determine_setup without -c or --rootdir: (rootdir, ini
    addopts). Walking up for setup.py (no ini file) is left to pytest."""
    dirs = []
    for a in pos:
        p = os.path.join(cwd, a.split("::")[0])
        p = os.path.normpath(p)
        try:
            if os.path.exists(p):
                dirs.append(p if os.path.isdir(p) else os.path.dirname(p))
        except (OSError, ValueError):
            pass
    ancestor = _common_ancestor(dirs, cwd)
    root, addopts = _locate([ancestor])
    if root is None:
        raise _Decline("no ini file above the arguments (rootdir left to pytest)")
    return root, addopts


def decide(argv, environ, cwd):
    """The client command line to exec instead of this pytest. Raises
    _Decline(why) when pytest should start as usual."""
    args = pytest_args(argv)
    if args is None:
        raise _Decline("not a pytest command line")
    env_opts = _shlex(environ.get("PYTEST_ADDOPTS", ""))
    for k in _ENV_DECLINE:
        if environ.get(k):
            raise _Decline(k + " is set")
    for k in ("PYTEST_ZYGOTE_DISABLE", "PYTEST_DAEMON_DISABLE"):
        if h._env_bool(k):
            raise _Decline(k + " is set")
    if environ.get("PYTEST_DAEMON_PORT") and h._env_bool("PYTEST_ZYGOTE_PORT_INSTANCES"):
        raise _Decline("PYTEST_DAEMON_PORT selects an instance")
    opts, pos = _split(env_opts + args)
    root, addopts = rootdir(pos, cwd)
    ini_opts, _ = _split(addopts)
    named, disabled = h._plugin_names(ini_opts + opts)
    plugins_env = environ.get("PYTEST_PLUGINS", "")
    named = named or any(n.strip() in h._PLUGINS for n in plugins_env.split(","))
    if disabled:
        raise _Decline("the plugin is disabled with -p no:")
    if not (named or (not environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD") and _entry_point())):
        raise _Decline("the plugin is not loaded (no -p pytest_zygote.plugin, no entry point)")
    binary = h._binary()
    if binary is None:
        raise _Decline("no pytest-zygote program found")
    probe = h._probe(root, None, binary)
    st = h._running(probe)
    if st is None:
        why = probe.get("probe.server") if probe else "pytest-zygote probe failed"
        raise _Decline("no zygote is running for " + root + ("" if why == "none" else
                                                             " (%s)" % why))
    flags = h._interpreter_flags()
    if flags:
        raise _Decline("this Python runs with " + " ".join(flags))
    theirs = st.get("python")
    if not theirs or h._interpreter_of(theirs) != h._this_interpreter():
        raise _Decline("the zygote runs %s, this is %s" % (theirs, sys.executable))
    other = h._other_build(st)
    if other:
        raise _Decline(other)  # the plugin says so, and runs in the process
    cmd = [binary, "run", "--root", root]
    if h._env_bool("PYTEST_ZYGOTE_START_IF_NEEDED") or h._env_bool(
            "PYTEST_DAEMON_START_IF_NEEDED") or {"--zygote-start-if-needed",
                                                 "--daemon-start-if-needed"} & set(opts):
        cmd.append("--start-if-needed")
    return cmd + ["--"] + h._strip_own(args)


def _entry_point():
    """Is this package installed with its pytest11 entry point (pip), so
    that pytest loads the plugin without -p?"""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        names = os.listdir(here)
    except OSError:
        return False
    for n in names:
        if n.startswith(("pytest_zygote-", "pytest-zygote-")) and n.endswith(".dist-info"):
            try:
                with open(os.path.join(here, n, "entry_points.txt"), encoding="utf-8") as f:
                    return "pytest_zygote.plugin" in f.read()
            except OSError:
                return False
    return False


def main():
    """Called by the .pth line for command lines that mention pytest. Execs
    the client or returns, never raises; on return, forgets the modules it
    imported so that pytest sees a process like any other.
    PYTEST_ZYGOTE_HOOK=0 turns the hook off; =verbose says what it decided."""
    mode = os.environ.get("PYTEST_ZYGOTE_HOOK", "").strip().lower()
    if mode in ("0", "false", "no", "off"):
        return
    try:
        cmd = decide(sys.orig_argv, os.environ, os.getcwd())
        why = None
    except _Decline as e:
        cmd, why = None, str(e)
    except Exception as e:  # noqa: BLE001 - anything unforeseen: pytest decides
        cmd, why = None, "%s: %s" % (type(e).__name__, e)
    if cmd is not None:
        env = dict(os.environ)
        env["PYTEST_ZYGOTE_HINT"] = "pytest --zygote-start (or add --zygote-start-if-needed)"
        if mode == "verbose":
            sys.stderr.write("pytest-zygote hook: handing over: %s\n" % " ".join(cmd))
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            os.execve(cmd[0], cmd, env)
        except OSError as e:
            why = "cannot run %s: %s" % (cmd[0], e.strerror)
    if mode == "verbose" and why != "not a pytest command line":
        sys.stderr.write("pytest-zygote hook: pytest starts as usual: %s\n" % why)
    # Nothing imported the package before the .pth line did.
    for name in [m for m in sys.modules if m.partition(".")[0] == "pytest_zygote"]:
        del sys.modules[name]
