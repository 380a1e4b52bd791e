import os

import pytest

from graphlog import mark
from pkg import other

mark(__name__)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _expected():
    # What the test writes next to the edit: {"X": ..., "Y": ...}
    values = {}
    with open(os.path.join(ROOT, "expected.txt")) as f:
        for line in f:
            key, _, value = line.strip().partition("=")
            values[key] = int(value)
    return values


@pytest.fixture(autouse=True)
def _mark_run():
    mark("RUN")


@pytest.fixture
def expected():
    return _expected()


@pytest.fixture
def other_y():
    return other.Y
