import pytest

SESSIONS = []


def pytest_sessionstart(session):
    SESSIONS.append(session)


@pytest.fixture
def sessions():
    return SESSIONS
