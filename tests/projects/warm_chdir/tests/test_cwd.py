import os

WORKDIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "workdir")


def test_cwd():
    assert os.path.realpath(os.getcwd()) == os.path.realpath(WORKDIR)


def test_relative_open():
    with open("data.txt") as f:
        assert f.read() == "data\n"
