from django.conf import settings

from proj import features


def test_feature():
    assert settings.FEATURE == "a"


def test_feature_read_at_import():
    assert features.FEATURE == "a"


def test_auth_installed():
    from django.contrib.auth.models import User

    assert User._meta.app_label == "auth"
