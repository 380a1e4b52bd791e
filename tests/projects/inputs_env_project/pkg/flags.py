import os

SKIP_DB = os.environ.get("SKIP_DB")
