import os

SLOW = os.environ.get("RUN_SLOW") == "1"
