# envlib lives outside the project (on PYTHONPATH); it reads ENVLIB_MODE when
# it is imported.
import envlib


def test_mode():
    assert envlib.MODE == "default"


def test_other():
    assert True
