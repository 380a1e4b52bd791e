from django.apps import apps
from django.conf import settings
from django.template import engines


def test_settings():
    assert settings.configured and settings.SECRET_KEY == "warm"


def test_apps_ready():
    assert apps.ready and apps.is_installed("django.contrib.auth")


def test_template():
    assert engines["django"].from_string("{{ x|add:1 }}").render({"x": 1}) == "2"
