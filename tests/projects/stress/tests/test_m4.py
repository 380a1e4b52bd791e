import json
import os

from mods import m4 as mod

HERE = os.path.dirname(os.path.abspath(__file__))


def _expected():
    with open(os.path.join(HERE, "..", "expected.json")) as f:
        return json.load(f)


def test_m4_value():
    assert mod.VALUE == _expected()["m4"]
