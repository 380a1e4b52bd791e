import warnings

warnings.warn("app.legacy is deprecated", DeprecationWarning, stacklevel=2)
warnings.warn("app.legacy emits a user warning at import", UserWarning)


class LegacyWarning(UserWarning):
    """A category of the project's own: the replay must find it by name."""


warnings.warn("app.legacy emits its own category", LegacyWarning)

ANSWER = 42
