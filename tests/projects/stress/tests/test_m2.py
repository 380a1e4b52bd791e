import json
import os

from mods import m2 as mod

HERE = os.path.dirname(os.path.abspath(__file__))


def _expected():
    with open(os.path.join(HERE, "..", "expected.json")) as f:
        return json.load(f)


def test_m2_value():
    assert mod.VALUE == _expected()["m2"]


def test_m2_up():
    assert mod.UP == _expected()["m0"]
