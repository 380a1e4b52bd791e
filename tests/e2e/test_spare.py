"""The spare child (README.md, How it works): a run child records the pages it
made private, and the next spare writes to them before its request comes, so
the next run does not take those copy-on-write faults itself."""

import re

import pz_util

ARGS = ["-q", "-p", "no:cacheprovider"]


def _faults(r):
    """The page faults PYTEST_ZYGOTE_TIMING reports for the run's child."""
    m = re.search(r"pytest-zygote: child [\d.]+ ms CPU, (\d+) page faults", r.err)
    assert m, r
    return int(m.group(1))


def test_the_next_run_finds_its_pages_prepared(pz):
    # The test walks data the zygote owns: thousands of pages the practice
    # run (collection only) never wrote. The first run takes those faults;
    # it records the pages even though its client leaves as soon as it has
    # the exit code, and the run after it finds them prepared.
    root = pz.project("learn")
    srv = pz.start(root)
    zpid = srv.status()["zygote_pid"]
    faults = []
    for _ in range(3):
        assert pz_util.wait_until(lambda: pz_util.spare_ready(zpid), timeout=30)
        r = pz.run_zygote(ARGS, cwd=root, env={"PYTEST_ZYGOTE_TIMING": "1"})
        assert r.rc == 0 and "1 passed" in r.out, r
        faults.append(_faults(r))
    # 300,000 lists of 56 + 8 bytes each: at least 4,000 pages
    assert faults[0] > 4000, faults
    assert faults[1] < faults[0] / 4 and faults[2] < faults[0] / 4, faults
