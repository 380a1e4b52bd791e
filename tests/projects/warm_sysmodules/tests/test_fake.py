import os

import fakemod


def test_value():
    assert fakemod.VALUE == 7


def test_made_in_this_process():
    assert fakemod.PID == os.getpid()
