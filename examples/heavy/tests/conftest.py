import pytest

from heavy.stats import sample_frame


@pytest.fixture(scope="session")
def frame():
    return sample_frame()
