import appconf


def test_name():
    assert appconf.get("NAME") == "warm"


def test_debug():
    assert appconf.get("DEBUG") is False
