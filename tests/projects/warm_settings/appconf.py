# Like django.conf.settings: configure() may be called once per process.
_settings = None
DEFAULTS = {"DEBUG": False}


def configure(**options):
    global _settings
    if _settings is not None:
        raise RuntimeError("Settings already configured")
    _settings = dict(DEFAULTS, **options)


def get(name):
    if _settings is None:
        raise RuntimeError("Settings are not configured")
    return _settings[name]
