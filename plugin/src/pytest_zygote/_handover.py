"""What the pytest plugin and the interpreter-start hook both need to decide
a hand-over, without importing pytest: where the zygote of a root keeps its
pid file and socket (src/common/paths.c), whether one is running and for which
interpreter, and the settings of this interpreter that a hand-over cannot
pass on.

PYTEST_DONT_REWRITE: the start hook may import this before pytest does.
"""

import fcntl
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


def _fnv1a(data, h):
    for byte in data:
        h = ((h ^ byte) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def _pid_file(root, instance):
    """The pid file of the zygote for root (src/common/paths.c: paths_for_root)."""
    over = os.environ.get("PYTEST_ZYGOTE_RUNTIME_DIR")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if over:
        rdir = over
    elif xdg and xdg.startswith("/") and os.access(xdg, os.W_OK | os.X_OK):
        rdir = xdg + "/pytest-zygote"
    else:
        rdir = "/tmp/pytest-zygote-%d" % os.getuid()
    root = os.fsencode(os.path.realpath(root))
    h = _fnv1a(root, 1469598103934665603)
    if instance:
        h = _fnv1a(os.fsencode(str(instance)), _fnv1a(b"\x01", h))
    base = root.rsplit(b"/", 1)[-1] or b"root"
    safe = bytes(ord("_") if (c == ord(".") and k == 0) else c
                 for k, c in enumerate(base[:24]))
    return os.path.join(os.fsencode(rdir), safe + b"-%012x.pid" % (h & 0xFFFFFFFFFFFF))


def _zygote_running(root, instance):
    """Does a server of ours hold the lock on root's pid file? Reads
    nothing, connects to nothing: a project without a zygote pays an open
    or two. A runtime directory or pid file that is not ours, or that others
    may write (another user made /tmp/pytest-zygote-UID first), is no server
    of ours: pytest then runs in its own process instead of handing over to
    a client that would refuse the directory."""
    path = _pid_file(root, instance)
    try:
        # The directory checked is the one read from (src/common/paths.c
        # paths_open_dir), whatever its path leads to meanwhile.
        dfd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                      | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        d = os.fstat(dfd)
        if d.st_uid != os.getuid() or d.st_mode & 0o077:
            return False
        fd = os.open(os.path.basename(path), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW,
                     dir_fd=dfd)
    except OSError:
        return False
    finally:
        os.close(dfd)
    st = os.fstat(fd)
    if st.st_uid != os.getuid():
        os.close(fd)
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def _server_status(root, instance):
    """The running server's status ({key: value}, src/supervisor/status.c
    status_text), or None: one round trip on its socket (about a
    millisecond), only when a server holds the pid file. As the client
    does (src/client/client.c client_connect): the runtime directory is
    checked on an open descriptor and the socket reached through it, and the
    server must run as our uid, before anything is sent."""
    import socket
    import stat
    import struct

    path = _pid_file(root, instance)[:-len(b".pid")] + b".sock"
    hello = struct.pack("=IIIIII", 1, 16, 0x47595a50, 1, 2, 0)  # HELLO: magic, v1, STATUS
    done = struct.pack("=II", 6, 0)
    try:
        dfd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                      | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        d = os.fstat(dfd)
        if not stat.S_ISDIR(d.st_mode) or d.st_uid != os.getuid() or d.st_mode & 0o077:
            return None
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(b"/proc/self/fd/%d/%s" % (dfd, os.path.basename(path)))
            uid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                   struct.calcsize("3i")))[1]
            if uid != os.geteuid():
                return None
            s.sendall(hello + done)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    finally:
        os.close(dfd)
    if len(data) < 8:
        return None
    kind, n = struct.unpack("=II", data[:8])
    if kind != 43:  # STATUS
        return None
    text = data[8:8 + n].rstrip(b"\0").decode("utf-8", "replace")
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _other_build(binary, st):
    """None when the program binary and the server whose status is st are one
    build (or binary predates build ids), else what to say about the server:
    its run would refuse to run there (exit 76). One `binary --version`
    (about a millisecond), only once a hand-over is decided."""
    import re
    import subprocess

    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             timeout=10, stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"build ([0-9a-f]+)", out)
    if not m or st.get("build") == m[1]:
        return None
    theirs = st.get("build") or "an older build"
    return "the zygote is another build of pytest-zygote (server: %s %s; this one: %s)" % (
        st.get("version", "?"), theirs, m[1])


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


_SECTIONS = ((".pytest-zygote.ini", "[pytest-zygote]"), ("pytest.ini", "[pytest-zygote]"),
             ("tox.ini", "[pytest-zygote]"), ("setup.cfg", "[pytest-zygote]"),
             ("pyproject.toml", "[tool.pytest-zygote]"))


def _project_section(root):
    """(file, start_if_needed) of the project's pytest-zygote section, the
    first of the files src/common/conf.c reads, or (None, False). Reading the
    values properly (and reporting bad ones) is the C side's job."""
    for name, header in _SECTIONS:
        path = os.path.join(str(root), name)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        inside, start = False, False
        found = False
        for line in lines:
            s = line.strip()
            if s.startswith("["):
                inside = s.split("#")[0].split(";")[0].strip() == header
                found = found or inside
                continue
            if inside and s.split("=")[0].strip() == "start_if_needed" and "=" in s:
                v = s.split("=", 1)[1].split(" #")[0].split(" ;")[0].strip().strip("\"'")
                start = v.lower() in _TRUE
        if found:
            return path, start
    return None, False


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
