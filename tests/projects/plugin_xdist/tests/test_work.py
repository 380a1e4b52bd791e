import os

import pytest


@pytest.mark.parametrize("n", range(6))
def test_square(n):
    assert n * n == n ** 2


def test_worker_id(worker_id):
    # "master" without -n, "gw0"/"gw1" with -n 2
    assert worker_id == "master" or worker_id.startswith("gw")
    assert os.environ.get("PYTEST_XDIST_WORKER", "master") == worker_id


def test_fails():
    assert "left" == "right"


@pytest.mark.skip(reason="not today")
def test_skipped():
    pass
