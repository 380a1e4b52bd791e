#!/usr/bin/python3
"""Benchmark runs after an edit against warm runs, side by side.

Generates a project of N modules (app/core.py imported by every other module,
app/mNN.py each imported by one test module, some standard-library weight),
starts a zygote on it in a private runtime directory, and measures, in rounds:

    warm          a run with nothing changed
    leaf edit     the first run after editing one leaf module
    core edit     the first run after editing the module imported by everything
    second run    the run after that, once the fresh generation has taken over

Each is reported as a median and as a ratio to the warm median of the same
session. The server is stopped and the project removed at the end.

    /usr/bin/python3 scripts/bench_edits.py [-n ROUNDS] [--modules N] [--json PATH]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_project(root, n):
    write(root / "pytest.ini", "[pytest]\n")
    write(root / "app" / "__init__.py", "")
    write(root / "app" / "core.py",
          "import json, decimal, email.message, http.cookies, urllib.parse\nVERSION = 0\n"
          "def value(x):\n    return x + VERSION\n")
    for i in range(n):
        write(root / "app" / ("m%02d.py" % i),
              "from app import core\nK = %d\ndef f():\n    return core.value(K)\n" % i)
        write(root / "tests" / ("test_m%02d.py" % i),
              "from app import m%02d\n\ndef test_f():\n    assert m%02d.f() >= %d\n"
              % (i, i, i))


def timed(cmd, cwd, env):
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=300)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit("run failed (%d):\n%s%s" % (r.returncode, r.stdout, r.stderr))
    return dt


def status(zbin, root, env):
    r = subprocess.run([zbin, "status", "--root", str(root), "--json"], env=env,
                       capture_output=True, text=True, timeout=60)
    return json.loads(r.stdout)


def wait_generation(zbin, root, env, gen, timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = status(zbin, root, env)
        if st.get("generation", 0) >= gen and st.get("warming", 0) == 0:
            return st
        time.sleep(0.05)
    sys.exit("no fresh generation after %ss" % timeout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--rounds", type=int, default=5)
    ap.add_argument("--modules", type=int, default=30)
    ap.add_argument("--bin", default=os.environ.get("PYTEST_ZYGOTE_BIN",
                                                     str(REPO / "build" / "pytest-zygote")))
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--json")
    a = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="pz-bench-edits-"))
    rt = tmp / "rt"
    rt.mkdir(mode=0o700)
    root = tmp / "proj"
    make_project(root, a.modules)
    env = dict(os.environ, PYTEST_ZYGOTE_RUNTIME_DIR=str(rt), PYTEST_ZYGOTE_SETTLE_MS="100")
    run = [a.bin, "run", "--", "-q", "-p", "no:cacheprovider"]
    times = {"warm": [], "leaf edit": [], "core edit": [], "second run": [], "cold": []}
    try:
        subprocess.run([a.bin, "start", "--root", str(root), "--python", a.python], env=env,
                       check=True, stdout=subprocess.DEVNULL, timeout=300)
        gen = status(a.bin, root, env)["generation"]
        for k in range(a.rounds):
            times["cold"].append(timed([a.python, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                                       root, env))
            timed(run, root, env)
            times["warm"].append(timed(run, root, env))
            leaf = root / "app" / ("m%02d.py" % (k % a.modules))
            leaf.write_text(leaf.read_text() + "# edit %d\n" % k)
            times["leaf edit"].append(timed(run, root, env))
            gen = wait_generation(a.bin, root, env, gen + 1)["generation"]
            core = root / "app" / "core.py"
            core.write_text(core.read_text() + "# edit %d\n" % k)
            times["core edit"].append(timed(run, root, env))
            gen = wait_generation(a.bin, root, env, gen + 1)["generation"]
            times["second run"].append(timed(run, root, env))
    finally:
        subprocess.run([a.bin, "stop", "--root", str(root)], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)

    warm = statistics.median(times["warm"])
    print("%-12s %9s %9s" % ("", "median", "x warm"))
    result = {}
    for name, ts in times.items():
        m = statistics.median(ts)
        result[name] = {"median_s": m, "ratio_to_warm": m / warm, "runs": ts}
        print("%-12s %8.3fs %8.2fx" % (name, m, m / warm))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
