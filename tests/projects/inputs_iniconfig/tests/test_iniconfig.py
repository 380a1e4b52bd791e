# iniconfig is a copy of the installed package in src/ (PYTHONPATH=src): the
# project is a package pytest itself imports.
import os

import iniconfig


def test_imported_from_src():
    assert os.path.basename(os.path.dirname(os.path.dirname(iniconfig.__file__))) == "src"


def test_mark():
    assert getattr(iniconfig, "ZYGOTE_MARK", 0) == 1
