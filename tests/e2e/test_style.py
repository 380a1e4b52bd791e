"""House style that a tool can check: every C file is formatted as
.clang-format says (scripts/format.sh applies it)."""

import shutil
import subprocess

import pytest

import pz_util


def test_c_files_are_formatted():
    if not shutil.which("clang-format"):
        pytest.fail("clang-format is not installed: bash scripts/install-deps.sh", pytrace=False)
    r = subprocess.run(["bash", str(pz_util.REPO / "scripts" / "format.sh"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, "not formatted (run scripts/format.sh):\n" + r.stderr[-4000:]
