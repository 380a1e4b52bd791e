import pytest

CALLS = {"session": 0, "module": 0, "class": 0}


@pytest.fixture(scope="session")
def session_res():
    CALLS["session"] += 1
    print("session setup")
    yield {"name": "session"}
    print("session teardown")


@pytest.fixture(scope="module")
def module_res():
    CALLS["module"] += 1
    return {"name": "module"}


@pytest.fixture(scope="class")
def class_res():
    CALLS["class"] += 1
    return {"name": "class"}


@pytest.fixture
def func_res(session_res, module_res):
    return [session_res["name"], module_res["name"], "function"]


@pytest.fixture
def broken_fixture():
    raise RuntimeError("fixture is broken")


@pytest.fixture
def calls():
    return CALLS
