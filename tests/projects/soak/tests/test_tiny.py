import os


def test_tiny():
    assert os.environ["PZ_SOAK_RUN"].isdigit()
