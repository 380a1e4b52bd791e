import os


def test_app_env():
    assert os.environ.get("APP_ENV") == "test"


def test_client_env_kept():
    assert os.environ.get("WARM_CLIENT") == "yes"
