#!/usr/bin/python3
"""Peak memory of a refresh, against the zygote's RSS, and the first run
after the edit, against a warm run, on generated bench projects.

    /usr/bin/python3 bench/refresh_memory.py [--projects tiny,large] [--rounds 3]
        [--bin build/pytest-zygote] [--python /usr/bin/python3]

Each round: start a server, make two warm runs, then twice append a comment
to the project's leaf module and, from that moment until the new generation
serves, sample every 30 ms the sum of PSS of the server's processes
(supervisor, zygotes, spares, learning runs, children collected ahead). The
first edit has no run (the refresh alone); after the second a run starts at
once (as a person saving then running would), so that peak includes the
run's own memory, and the run's time is compared with a warm run's. Ratios
only: absolute sizes depend on the machine.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import projects  # noqa: E402


def pss_kb(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open("/proc/%d/task/%d/children" % (p, p)) as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def _title(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            words = f.read().split(b"\0")[0].decode(errors="replace").split()
        return " ".join(words[1:3]) if words[:1] == ["pytest-zygote:"] else words[0]
    except (OSError, IndexError):
        return "?"


def status(zbin, root, env):
    import json

    r = subprocess.run([zbin, "status", "--root", str(root), "--json"], env=env,
                       capture_output=True, text=True)
    st = json.loads(r.stdout or "{}")
    return st[0] if isinstance(st, list) else st


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--projects", default="tiny,large")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--bin", default=os.environ.get("PYTEST_ZYGOTE_BIN",
                                                   str(HERE.parent / "build" / "pytest-zygote")))
    p.add_argument("--python", default="/usr/bin/python3")
    p.add_argument("--verbose", action="store_true", help="what each process held at the peak")
    ns = p.parse_args(argv)
    zbin = str(Path(ns.bin).resolve())
    scratch = Path(tempfile.mkdtemp(prefix="pzb-refresh-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHON"))}
    env["PYTEST_ZYGOTE_RUNTIME_DIR"] = str(scratch / "run")
    env["PYTEST_ZYGOTE_TIMING"] = "1"
    print("refresh memory: %s, %d round(s)" % (zbin, ns.rounds))
    print("%-8s %-10s %-16s %-10s %-14s" % ("project", "refresh", "refresh+run", "idle",
                                            "first run"))
    print("%-8s %-10s %-16s %-10s %-14s" % ("", "peak/RSS", "peak/RSS", "PSS/RSS",
                                            "after edit/warm"))
    try:
        _measure(ns, zbin, scratch, env)
    finally:
        for root in scratch.glob("*/*"):
            subprocess.run([zbin, "stop", "--root", str(root)], env=env, capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)


def _measure(ns, zbin, scratch, env):
    for name in ns.projects.split(","):
        peaks, runpeaks, idles, firsts = [], [], [], []
        for rnd in range(ns.rounds):
            proj = projects.make(name, scratch / ("%s-%d" % (name, rnd)), quick=True)
            root = proj.root
            args = [zbin, "run", "--root", str(root), "--", "-q", "-p", "no:cacheprovider"]
            r = subprocess.run([zbin, "start", "--root", str(root), "--python", ns.python],
                               env=env, capture_output=True, text=True)
            if r.returncode:
                sys.exit("start failed: %s" % r.stderr)
            st = status(zbin, root, env)
            sup = int(st["pid"])
            warm = []
            for _ in range(2):
                t = time.monotonic()
                subprocess.run(args, cwd=root, env=env, capture_output=True)
                warm.append(time.monotonic() - t)
                time.sleep(1.0)
            st = status(zbin, root, env)
            rss = int(st["rss_kb"])
            idle = sum(pss_kb(q) for q in tree(sup))
            # A refresh alone (an edit, no run), then one with the first
            # run after the edit started at once.
            for with_run in (False, True):
                gen = int(status(zbin, root, env)["generation"])
                with open(proj.leaf, "a") as f:
                    f.write("# an edit\n")
                peak, at_peak, t0 = 0, "", time.monotonic()
                run = subprocess.Popen(args, cwd=root, env=env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL) if with_run else None
                first = None
                while time.monotonic() - t0 < 120:
                    parts = [(pss_kb(q), q) for q in tree(sup)]
                    total = sum(k for k, _ in parts)
                    if total > peak:
                        peak = total
                        at_peak = ", ".join(
                            "%s %.2fx" % (_title(q), k / rss)
                            for k, q in sorted(parts, reverse=True) if k > rss / 20)
                    if run is not None and first is None and run.poll() is not None:
                        first = time.monotonic() - t0
                    st = status(zbin, root, env)
                    if int(st.get("generation", gen)) > gen and not int(st.get("warming", 1)) \
                            and not int(st.get("preparing", 0)) \
                            and (run is None or first is not None):
                        break
                    time.sleep(0.03)
                if ns.verbose:
                    print("  %s round %d peak%s: %s" % (name, rnd + 1,
                                                         " with a run" if with_run else "",
                                                         at_peak))
                if with_run:
                    runpeaks.append(peak / rss)
                    firsts.append(first / min(warm))
                else:
                    peaks.append(peak / rss)
                time.sleep(1.0)
            idles.append(idle / rss)
            subprocess.run([zbin, "stop", "--root", str(root)], env=env, capture_output=True)
        med = lambda v: "%.2fx" % statistics.median(v)  # noqa: E731
        print("%-8s %-10s %-16s %-10s %-14s" % (name, med(peaks), med(runpeaks), med(idles),
                                                med(firsts)))


if __name__ == "__main__":
    main()
