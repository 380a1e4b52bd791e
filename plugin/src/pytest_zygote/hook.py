"""Install, remove or show the interpreter-start hook (opt-in).

    python3 -m pytest_zygote.hook install [--dir DIR]
    python3 -m pytest_zygote.hook remove  [--dir DIR]
    python3 -m pytest_zygote.hook status

The hook is one line in ``pytest_zygote_hook.pth`` in a site directory of the
interpreter that runs this command (a virtualenv's site-packages inside one;
as root the first system site directory; else the user's site directory).
For ``python -m pytest`` and ``pytest`` commands it hands the run to a
zygote that is running for the project before pytest is even imported (see
pytest_zygote._fast); any other Python program only tests whether its first
two arguments mention pytest (about 50 microseconds). ``remove`` takes it
away; uninstalling the package leaves a line that does nothing (its import
fails quietly).

PYTEST_DONT_REWRITE
"""

import argparse
import os
import site
import sys
import sysconfig

NAME = "pytest_zygote_hook.pth"

# One line: site.py runs lines that start with "import". A program whose first
# two arguments do not mention pytest stops at the test (about 50 us, most of
# it compiling the line); _fast then looks at the command line properly. The
# package is imported from where it was when the hook was installed: site.py
# may run this line before it has put that directory on sys.path (user site
# directories come first), and the directory is taken off again.
_CODE = (
    "import sys\n"
    "d = %r\n"
    "n = d not in sys.path\n"
    "if n: sys.path.insert(0, d)\n"
    "try:\n"
    " from pytest_zygote import _fast\n"
    "except ImportError:\n"
    " _fast = None\n"
    "finally:\n"
    " if n: sys.path.remove(d)\n"
    "if _fast: _fast.main()\n"
)


def line(package_parent=None):
    """The .pth line for the package in package_parent (this one's)."""
    d = package_parent or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return ('import sys; "pytest" in str(getattr(sys, "orig_argv", ())[1:3]).replace(".", "") '
            "and exec(%r)\n" % (_CODE % d))


def default_dir():
    if sys.prefix != sys.base_prefix:
        return sysconfig.get_path("purelib")
    if os.geteuid() == 0:
        return site.getsitepackages()[0]
    return site.getusersitepackages()


def _site_dirs():
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return dirs


def installed():
    return [d for d in _site_dirs() if os.path.isfile(os.path.join(d, NAME))]


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="%s -m pytest_zygote.hook" % os.path.basename(sys.executable),
        description="The interpreter-start hook: `pytest` and `python -m pytest` commands go "
                    "to a running zygote before pytest is imported, instead of after pytest "
                    "has started (the plugin's hand-over).")
    ap.add_argument("action", choices=("install", "remove", "status"),
                    help="install or remove the hook of this interpreter, or show where it is")
    ap.add_argument("--dir", help="the site directory to write to or remove from "
                                  "(default: %s)" % default_dir())
    ns = ap.parse_args(argv)
    if ns.action == "status":
        found = installed()
        for d in found:
            print("installed: %s" % os.path.join(d, NAME))
        if not found:
            print("not installed for %s (install: %s -m pytest_zygote.hook install)"
                  % (sys.executable, sys.executable))
        return 0 if found else 1
    target = os.path.join(ns.dir or default_dir(), NAME)
    if ns.action == "remove":
        try:
            os.unlink(target)
        except FileNotFoundError:
            print("no hook at %s" % target)
            return 0
        except OSError as e:
            print("cannot remove %s: %s" % (target, e.strerror), file=sys.stderr)
            return 73
        print("removed %s" % target)
        return 0
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = target + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(line())
        os.replace(tmp, target)
    except OSError as e:
        print("cannot write %s: %s (choose another site directory with --dir, or run as the "
              "owner of this interpreter)" % (target, e.strerror), file=sys.stderr)
        return 73
    print("installed %s (pytest commands of %s go to a running zygote before pytest is "
          "imported; PYTEST_ZYGOTE_HOOK=verbose says why one does not)" % (target, sys.executable))
    return 0


if __name__ == "__main__":
    sys.exit(main())
