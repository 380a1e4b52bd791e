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
