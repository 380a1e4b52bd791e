"""pytest's in-process floor: pytest.main(ARGS) called again and again in one
interpreter that has already run it (the model of a daemon that keeps one
process, like pytest-hot-reloading). Run by bench/run.py in the project root:

    python3 bench/floor.py --calls N --warmup 2 --out FILE -- PYTEST-ARGS

Writes {"seconds": [per timed call], "rcs": [every call's exit code]} to FILE.
Modules imported by an earlier call stay in sys.modules, so later calls skip
importing (and assertion-rewriting) the test modules and the project: that is
the point of a floor. pytest itself re-reads its configuration, re-registers
its plugins and re-collects on every call, as any run must.
"""

import argparse
import json
import os
import sys
import time


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", required=True)
    if "--" in argv:
        i = argv.index("--")
        argv, args = argv[:i], argv[i + 1:]
    else:
        args = ["-q"]
    ns = ap.parse_args(argv)
    # As `python3 -m pytest`: the current directory first on sys.path, not
    # this script's directory.
    sys.path[0] = os.getcwd()
    import pytest

    seconds, rcs = [], []
    for i in range(ns.warmup + ns.calls):
        t0 = time.perf_counter()
        rc = pytest.main(list(args))
        dt = time.perf_counter() - t0
        sys.stdout.flush()
        rcs.append(int(rc))
        if i >= ns.warmup:
            seconds.append(dt)
    with open(ns.out, "w") as f:
        json.dump({"seconds": seconds, "rcs": rcs}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
