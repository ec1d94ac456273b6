"""`ccm table FILE`: the compiled routing table as JSON. Secrets appear as `env(NAME)`, never as values: the table
holds references, not what the environment says."""

from __future__ import annotations

import click

from ccm.cli.check import compiled_or_exit


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
def table(file: str) -> None:
    """Print the compiled routing table as JSON."""
    table = compiled_or_exit(file).compiled
    assert table is not None
    click.echo(table.model_dump_json(indent=2))
