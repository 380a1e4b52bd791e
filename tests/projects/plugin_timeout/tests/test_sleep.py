import time


def test_quick():
    assert sum(range(10)) == 45


def test_sleeps_too_long():
    time.sleep(5)


def test_after_the_slow_one():
    assert True
