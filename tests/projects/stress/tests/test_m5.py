import json
import os

from mods import m5 as mod

HERE = os.path.dirname(os.path.abspath(__file__))


def _expected():
    with open(os.path.join(HERE, "..", "expected.json")) as f:
        return json.load(f)


def test_m5_value():
    assert mod.VALUE == _expected()["m5"]


def test_m5_up():
    assert mod.UP == _expected()["m4"]
