"""``selectivity report``: the self-contained HTML report of a sweep."""

from __future__ import annotations

import click

from .options import SweepDir, data_option, pwcca_method_option

__all__ = ["report"]


@click.command()
@click.argument("sweep_dir", type=SweepDir())
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    required=True,
    help="Output directory: report.html, figures/*.png, tables/*.csv.",
)
@click.option(
    "--cca/--no-cca",
    default=False,
    show_default=True,
    help="Add the CCA analysis (paper Fig. 3); needs the data and the checkpoints.",
)
@data_option("Dataset for the CCA (default: the sweep's, then $SELECTIVITY_DATA; never downloaded).")
@click.option(
    "--cca-images",
    type=click.IntRange(min=2),
    default=2000,
    show_default=True,
    help="Test images probed by the CCA (same for every run).",
)
@click.option(
    "--cca-mode",
    type=click.Choice(["spatial_mean", "positions"]),
    default="spatial_mean",
    show_default=True,
    help="Conv-map flattening for the CCA.",
)
@click.option(
    "--cca-max-pairs",
    type=click.IntRange(min=1),
    default=None,
    help="Cap on CCA pairs per alpha and kind (default: all).",
)
@pwcca_method_option("--cca-method")
@click.option(
    "--family",
    type=click.Choice(["sign", "all"]),
    default="sign",
    show_default=True,
    help="Bonferroni family of the t-tests vs alpha = 0: one per paper figure (alpha < 0, alpha > 0) or all alphas.",
)
@click.option("--welch", is_flag=True, help="Welch's t-test instead of Student's (the paper's 't-test').")
@click.option("--device", default="cpu", show_default=True, help="Device of the CCA forward passes.")
@click.option(
    "--resamples",
    type=click.IntRange(min=1),
    default=2000,
    show_default=True,
    help="Bootstrap resamples per confidence interval.",
)
def report(
    sweep_dir,
    out,
    cca,
    data,
    cca_images,
    cca_mode,
    cca_max_pairs,
    cca_method,
    family,
    welch,
    device,
    resamples,
):
    """Self-contained HTML report of a sweep (tables, statistics, every paper figure)."""
    from ..report import build_report

    path = build_report(
        sweep_dir,
        out,
        cca=cca,
        data=data,
        cca_images=cca_images,
        cca_mode=cca_mode,
        cca_max_pairs=cca_max_pairs,
        cca_method=cca_method,
        family=family,
        welch=welch,
        device=device,
        n_resamples=resamples,
        progress=cca,
        log=lambda m: click.echo(m, err=True),
    )
    click.echo(str(path))
