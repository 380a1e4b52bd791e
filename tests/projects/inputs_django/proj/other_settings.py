from proj.settings import *  # noqa: F401,F403

FEATURE = "b"
