import json
import os

import pytest


@pytest.fixture(scope="module")
def module_resource():
    return {"made_in": os.getpid()}


def pytest_runtest_call(item):
    # Where each test ran, for test_xdist.py: PYTEST_XDIST_REPORT names a file.
    report = os.environ.get("PYTEST_XDIST_REPORT")
    if report:
        import calc

        with open(report, "a") as f:
            f.write(json.dumps({"test": item.nodeid, "pid": os.getpid(), "ppid": os.getppid(),
                                "worker": os.environ.get("PYTEST_XDIST_WORKER"),
                                "calc_imported_by": calc.IMPORTED_BY}) + "\n")
