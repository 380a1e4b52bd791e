from click.testing import CliRunner

import pkg.commands  # noqa: F401 (adds the commands to the group)
from pkg.cli import cli


def test_hello():
    assert CliRunner().invoke(cli, ["hello"]).output == "v1\n"


def test_commands():
    assert sorted(cli.commands) == ["hello"]
