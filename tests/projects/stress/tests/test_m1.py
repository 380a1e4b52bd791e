import json
import os

from mods import m1 as mod

HERE = os.path.dirname(os.path.abspath(__file__))


def _expected():
    with open(os.path.join(HERE, "..", "expected.json")) as f:
        return json.load(f)


def test_m1_value():
    assert mod.VALUE == _expected()["m1"]


def test_m1_up():
    assert mod.UP == _expected()["m0"]
