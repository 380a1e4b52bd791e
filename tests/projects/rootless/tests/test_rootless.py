import os

with open(os.environ.get("EXEC_LOG", os.devnull), "a") as _f:
    _f.write("test_rootless %d\n" % os.getpid())


def test_greeting(greeting):
    assert greeting == "hello"


def test_conftest_dir_is_on_sys_path():
    # Only importing tests/sub/conftest.py (rootless) put tests/sub on sys.path.
    import helper_sub

    assert helper_sub.VALUE == 42
