import warnings

warnings.warn("app.legacy is deprecated", DeprecationWarning, stacklevel=2)
warnings.warn("app.legacy emits a user warning at import", UserWarning)

ANSWER = 42
