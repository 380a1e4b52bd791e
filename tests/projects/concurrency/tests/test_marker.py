import os
import time


def test_marker():
    mark = os.environ["PZ_MARK"]
    for i in range(20):
        print("MARK %s line %d" % (mark, i), flush=True)
    print("PID %s %d" % (mark, os.getpid()), flush=True)
    assert mark.startswith("m")


def test_barrier():
    """Every run waits until all runs have started: fails if runs are serialised."""
    directory = os.environ.get("PZ_BARRIER_DIR")
    if not directory:
        return
    count = int(os.environ["PZ_BARRIER_COUNT"])
    open(os.path.join(directory, os.environ["PZ_MARK"]), "w").close()
    deadline = time.monotonic() + 30
    while len(os.listdir(directory)) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(os.listdir(directory)) >= count, "runs did not overlap"


def test_argv_and_env():
    """Prints this run's argv and PZ_MARK, for a check that nothing mixed."""
    import sys

    print("RUN %s argv=%s pid=%d" % (os.environ["PZ_MARK"], " ".join(sys.argv[1:]), os.getpid()),
          flush=True)


def test_record_overlap():
    """While alive, keep a file in PZ_LIVE_DIR; note how many such files
    (runs alive at the same moment, at least) were there at any point."""
    live = os.environ["PZ_LIVE_DIR"]
    mine = os.path.join(live, os.environ["PZ_MARK"])
    open(mine, "w").close()
    seen = 0
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        seen = max(seen, len(os.listdir(live)))
        time.sleep(0.01)
    seen = max(seen, len(os.listdir(live)))
    with open(os.path.join(os.environ["PZ_SEEN_DIR"], os.environ["PZ_MARK"]), "w") as f:
        f.write(str(seen))
    os.unlink(mine)
