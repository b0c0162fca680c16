"""``selectivity models`` and ``selectivity presets``: what can be named on the command line."""

from __future__ import annotations

import click

__all__ = ["models", "presets"]


@click.command()
def models() -> None:
    """List the built-in models."""
    from ..models import list_models

    for name in list_models():
        click.echo(name)


@click.command()
def presets() -> None:
    """List the training presets and the sweep presets."""
    from ..run.config import list_presets
    from ..sweep import list_sweep_presets

    click.echo("training presets (selectivity train --preset):")
    for name, doc in list_presets().items():
        click.echo(f"  {name:12s} {doc}")
    click.echo("sweep presets (selectivity sweep --preset):")
    for name, doc in list_sweep_presets().items():
        click.echo(f"  {name:12s} {doc}")
