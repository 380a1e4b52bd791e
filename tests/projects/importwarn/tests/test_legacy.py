from app import legacy


def test_answer():
    assert legacy.ANSWER == 42
