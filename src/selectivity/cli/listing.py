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
    """List the training presets and the sweep presets, one line each.

    A training preset configures one run (`train --preset`); a sweep preset is a grid of
    runs (`sweep --preset`) whose runs use a training preset (`sweep --train-preset`
    changes it).
    """
    from ..run.config import list_presets
    from ..sweep import list_sweep_presets

    click.echo("training presets, one run each (train --preset NAME, sweep --train-preset NAME):")
    for name, doc in list_presets().items():
        click.echo(f"  {name:12s} {doc}")
    click.echo("sweep presets, a grid of runs (sweep --preset NAME):")
    for name, doc in list_sweep_presets().items():
        click.echo(f"  {name:12s} {doc}")
