import pytest


@pytest.fixture(scope="module")
def counter():
    return {"n": 0}


@pytest.mark.parametrize("i", range(3))
def test_module_fixture_shared(counter, i):
    counter["n"] += 1
    assert counter["n"] == i + 1


def test_session_again(session_res, calls):
    assert session_res["name"] == "session"
    assert calls["session"] == 1
