#!/usr/bin/python3
"""Fetch the upstream sources of a few real projects from Debian's archive,
for the end-to-end tests that compare pytest-zygote with plain pytest, per
test id, on suites nobody here wrote (tests/e2e/test_real_suites.py).

    /usr/bin/python3 scripts/fetch-real-suites.py DIR

Each suite is the upstream tarball (`.orig.tar.*`) of a Debian 12 source
package, checked against the SHA-256 the source index gives and unpacked to
DIR/NAME. Idempotent: a suite already in DIR is kept. The first time it may
add Debian's source index (deb-src) to apt's sources, which needs root.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request

# Source packages whose tests need only pytest and Debian's python3 packages.
SUITES = ("markupsafe", "jinja2")
SOURCES = "/etc/apt/sources.list.d/pytest-zygote-src.sources"
DEB_SRC = ("Types: deb-src\nURIs: http://deb.debian.org/debian\n"
           "Suites: bookworm bookworm-updates\nComponents: main\n"
           "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")


def say(msg):
    print("fetch-real-suites: %s" % msg, flush=True)


def has_deb_src():
    for d, _, files in os.walk("/etc/apt"):
        for f in files:
            if f.endswith((".list", ".sources")):
                try:
                    with open(os.path.join(d, f)) as fh:
                        if "deb-src" in fh.read():
                            return True
                except OSError:
                    pass
    return False


def orig_uri(pkg):
    """(url, file name, sha256) of the package's upstream tarball."""
    out = subprocess.run(["apt-get", "source", "--print-uris", "-qq", pkg],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and ".orig.tar." in parts[1] and not parts[1].endswith(".asc"):
            return parts[0].strip("'"), parts[1], parts[3].partition(":")[2]
    raise SystemExit("fetch-real-suites: no upstream tarball listed for %s" % pkg)


def fetch(pkg, dest):
    url, name, sha = orig_uri(pkg)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(dest)) as work:
        path = os.path.join(work, name)
        with urllib.request.urlopen(url, timeout=60) as r, open(path, "wb") as f:
            shutil.copyfileobj(r, f)
        with open(path, "rb") as f:
            got = hashlib.sha256(f.read()).hexdigest()
        if got != sha:
            raise SystemExit("fetch-real-suites: %s: SHA-256 %s, the index says %s" % (name, got, sha))
        with tarfile.open(path) as tar:
            tar.extractall(work, filter="data") if hasattr(tarfile, "data_filter") \
                else tar.extractall(work)
        top = [d for d in os.listdir(work) if os.path.isdir(os.path.join(work, d))]
        if len(top) != 1:
            raise SystemExit("fetch-real-suites: %s does not unpack to one directory" % name)
        shutil.rmtree(dest, ignore_errors=True)
        os.rename(os.path.join(work, top[0]), dest)


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 64
    top = os.path.abspath(argv[1])
    os.makedirs(top, exist_ok=True)
    missing = [s for s in SUITES if not os.path.isdir(os.path.join(top, s))]
    if not missing:
        say("all %d suites in %s" % (len(SUITES), top))
        return 0
    if not has_deb_src():
        say("adding Debian's source index (%s)" % SOURCES)
        with open(SOURCES, "w") as f:
            f.write(DEB_SRC)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
    for pkg in missing:
        try:
            fetch(pkg, os.path.join(top, pkg))
        except (subprocess.CalledProcessError, OSError):
            # The source index may be older than the archive: refresh, retry.
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            fetch(pkg, os.path.join(top, pkg))
        say("%s in %s" % (pkg, os.path.join(top, pkg)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
