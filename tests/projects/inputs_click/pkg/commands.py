import click

from pkg.cli import cli


@cli.command()
def hello():
    click.echo("v1")
