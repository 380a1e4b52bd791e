import os
import sys

import helperlib

HELPERS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "helpers")


def test_greet():
    assert helperlib.greet("you") == "hello you"


def test_inserted_once():
    assert sys.path.count(HELPERS) == 1
