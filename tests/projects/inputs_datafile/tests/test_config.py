from pkg.config import CONFIG


def test_x():
    assert CONFIG["x"] == 1


def test_loaded():
    assert isinstance(CONFIG, dict)
