import os
import time
from pathlib import Path


def test_blocks_until_interrupted():
    Path(os.environ["PZ_BLOCK_MARKER"]).write_text("started\n")
    deadline = time.monotonic() + 30  # bounded: the test sends Ctrl-C long before
    while time.monotonic() < deadline:
        time.sleep(0.05)
