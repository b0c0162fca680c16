"""Per-run analyses of a sweep: ``cca``, ``robustness``, ``geometry``; and ``corrupt``."""

from __future__ import annotations

from pathlib import Path

import click

from ..perturb import ATTACKS, CORRUPTIONS
from .options import EpsilonList, IntList, NameList, SweepDir, data_option, pwcca_method_option, usage_errors

__all__ = ["cca", "robustness", "geometry", "corrupt"]


def _print_frame(df, float_format: str, index: bool = False) -> None:
    """Every row and column of ``df`` as text, floats with ``float_format``."""
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", None, "display.max_rows", None):
        click.echo(df.to_string(index=index, float_format=lambda v: f"{v:{float_format}}"))


# --------------------------------------------------------------------------- cca
@click.command()
@click.argument("sweep_dir", type=SweepDir())
@data_option()
@click.option("--model", default=None, help="Only this model's runs (default: every model).")
@click.option(
    "--images",
    type=click.IntRange(min=2),
    default=2000,
    show_default=True,
    help="Test images probed (a stratified subset, same for every run).",
)
@click.option(
    "--mode",
    type=click.Choice(["spatial_mean", "positions"]),
    default="spatial_mean",
    show_default=True,
    help="Conv maps: one datapoint per image (spatial mean) or per image and position.",
)
@click.option(
    "--max-pairs",
    type=click.IntRange(min=1),
    default=None,
    help="Cap on pairs per alpha and kind (paper: 190 within, 400 between for 20 seeds).",
)
@click.option(
    "--min-ratio", type=float, default=5.0, show_default=True, help="Minimum datapoints per neuron."
)
@click.option(
    "--exclude-same-seed",
    is_flag=True,
    help="Leave out between pairs of equal seeds (same initialisation and batch order).",
)
@click.option("--device", default="cpu", show_default=True, help="Device of the forward passes.")
@pwcca_method_option("--method")
@click.option(
    "--order",
    type=click.Choice(["baseline-first", "alpha-first"]),
    default="baseline-first",
    show_default=True,
    help="Network order of a between pair (paper 1, A.2: the alpha = 0 network first).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def cca(
    sweep_dir,
    data,
    model,
    images,
    mode,
    max_pairs,
    min_ratio,
    exclude_same_seed,
    device,
    method,
    order,
    quiet,
):
    """PWCCA distances within and between alphas (paper section 4.2) -> SWEEP/analysis/cca_distances.csv."""
    from ..evaluate.cca import cca_distances, cca_summary

    df = cca_distances(
        sweep_dir,
        data,
        model=model,
        n_images=images,
        mode=mode,
        max_pairs=max_pairs,
        device=device,
        progress=not quiet,
        min_ratio=min_ratio,
        exclude_same_seed=exclude_same_seed,
        method=method,
        order=order,
        log=lambda m: click.echo(m, err=True),
    )
    _, _, tests = cca_summary(df)
    if not tests.empty:
        cols = [
            c
            for c in ("model", "alpha", "n", "mean_between", "mean_within", "ratio", "p_bonferroni", "note")
            if c in tests.columns
        ]
        _print_frame(tests[cols], ".4g")


# --------------------------------------------------------------------------- robustness (paper 2)
@click.command()
@click.argument("sweep_dir", type=SweepDir())
@data_option()
@click.option(
    "--images",
    type=click.IntRange(min=0),
    default=2000,
    show_default=True,
    help="Test images (a class-stratified subset, the same for every run); 0: the whole test split.",
)
@click.option(
    "--corruptions",
    type=NameList("corruption", CORRUPTIONS),
    default=None,
    help="Comma-separated corruptions (default: all 15); 'none' for none.",
)
@click.option(
    "--severities",
    type=IntList(),
    default="1,2,3,4,5",
    show_default=True,
    help="Comma-separated severities in 1..5.",
)
@click.option(
    "--attacks",
    type=NameList("attack", tuple(ATTACKS)),
    default="fgsm,pgd",
    show_default=True,
    help="Comma-separated attacks; 'none' for none.",
)
@click.option(
    "--epsilons",
    type=EpsilonList(),
    default=None,
    help="Comma-separated budgets in [0, 1] pixel units, fractions allowed (default: 0.25/255,0.5/255,1/255,2/255,4/255,8/255).",
)
@click.option("--norm", type=click.Choice(["linf", "l2"]), default="linf", show_default=True)
@click.option(
    "--pgd-steps",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="PGD iterations (step 2.5*eps/steps).",
)
@click.option(
    "--corrupted",
    "--cifar10-c",
    "corrupted",
    type=click.Path(),
    default=None,
    help="Read corrupted images from this directory instead of generating them: CIFAR-10-C format "
    "(labels.npy, <corruption>.npy) or Tiny ImageNet-C format (<corruption>/<severity>/<wnid>/*.JPEG), "
    "holding the whole test split. --cifar10-c is the older name.",
)
@click.option(
    "--params",
    type=click.Choice(["auto", "cifar10", "tinyimagenet"]),
    default="auto",
    show_default=True,
    help="Parameters of the generated corruptions; auto: Tiny ImageNet-C's for tiny-imagenet runs, "
    "CIFAR-10-C's otherwise.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generated corruptions.")
@click.option("--batch-size", type=click.IntRange(min=1), default=250, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def robustness(
    sweep_dir,
    data,
    images,
    corruptions,
    severities,
    attacks,
    epsilons,
    norm,
    pgd_steps,
    corrupted,
    params,
    seed,
    batch_size,
    device,
    quiet,
):
    """Corruption and adversarial accuracy of every completed run (paper 2) -> RUN/robustness.json."""
    from ..evaluate.robustness import RobustnessSettings, sweep_robustness

    with usage_errors():
        settings = RobustnessSettings(
            n_images=images or None,
            corruptions=corruptions if corruptions is not None else RobustnessSettings.corruptions,
            severities=severities,
            attacks=attacks,
            epsilons=epsilons if epsilons is not None else RobustnessSettings.epsilons,
            norm=norm,
            pgd_steps=pgd_steps,
            corrupted=corrupted,
            params=params,
            corruption_seed=seed,
            batch_size=batch_size,
            device=device,
        )
    df = sweep_robustness(
        sweep_dir, settings, data, progress=not quiet, log=lambda m: click.echo(m, err=True)
    )
    cols = [
        c
        for c in (
            "run_id",
            "alpha",
            "seed",
            "clean_accuracy",
            "mean_corruption_accuracy",
            "relative_corruption_accuracy",
        )
        if c in df.columns
    ]
    _print_frame(df[cols], ".4f")


# --------------------------------------------------------------------------- geometry
@click.command()
@click.argument("sweep_dir", type=SweepDir())
@data_option()
@click.option(
    "--images",
    type=click.IntRange(min=2),
    default=2000,
    show_default=True,
    help="Stratified test images (same for every run).",
)
@click.option(
    "--layers",
    type=NameList("layer", allow_none=False),
    default=None,
    help="Comma-separated layers (default: the run's selectivity layers).",
)
@click.option(
    "--share",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.95,
    show_default=True,
    help="Variance share of the PCA dimensionality, in (0, 1].",
)
@click.option(
    "--units",
    type=click.Choice(["channels", "flatten"]),
    default="channels",
    show_default=True,
    help="Units: channels (spatial mean) or every channel x position.",
)
@click.option(
    "--corruptions",
    type=NameList("corruption", CORRUPTIONS),
    default="gaussian_noise,contrast,fog",
    show_default=True,
    help="Comma-separated corruptions; 'none' for none.",
)
@click.option(
    "--severity", type=click.IntRange(1, 5), default=3, show_default=True, help="Corruption severity."
)
@click.option(
    "--epsilons",
    type=EpsilonList(),
    default="1/255,4/255",
    show_default=True,
    help="L-inf PGD budgets (pixel scale; fractions allowed); 'none' for none.",
)
@click.option(
    "--match/--no-match",
    default=True,
    show_default=True,
    help="Also L2 PGD at each corruption's median input L2 distance.",
)
@click.option("--attack-steps", type=click.IntRange(1), default=10, show_default=True, help="PGD steps.")
@click.option(
    "--gradient-images",
    type=click.IntRange(min=0),
    default=64,
    show_default=True,
    help="Images for the input-unit gradient variability (0: skip; else >= 2).",
)
@click.option(
    "--gradient-layers",
    type=NameList("layer", allow_none=False),
    default=None,
    help="Layers for the gradient variability (default: all).",
)
@click.option(
    "--batch-size", type=click.IntRange(1), default=250, show_default=True, help="Images per forward pass."
)
@click.option("--device", default="cpu", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--force", is_flag=True, help="Recompute runs whose geometry.json has the same settings.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def geometry(
    sweep_dir,
    data,
    images,
    layers,
    share,
    units,
    corruptions,
    severity,
    epsilons,
    match,
    attack_steps,
    gradient_images,
    gradient_layers,
    batch_size,
    device,
    force,
    quiet,
):
    """Dimensionality (clean, perturbed, change) and gradient variability of every completed run.

    Results: runs/<id>/geometry.json and the `geometry` table (`selectivity results --geometry`).
    """
    from ..evaluate.geometry import GeometrySettings, check_settings, sweep_geometry

    settings = GeometrySettings(
        n_images=images,
        layers=layers or None,
        share=share,
        units=units,
        corruptions=corruptions,
        severity=severity,
        epsilons=epsilons,
        match_l2=match,
        attack_steps=attack_steps,
        gradient_images=gradient_images,
        gradient_layers=gradient_layers or None,
        batch_size=batch_size,
    )
    with usage_errors():
        check_settings(settings)
    df = sweep_geometry(
        sweep_dir,
        settings,
        data,
        device,
        progress=not quiet,
        force=force,
        log=lambda m: click.echo(m, err=True),
    )
    clean = df[(df["measure"] == "pca") & (df["kind"] == "clean")]
    if not clean.empty:
        t = clean.pivot_table(index="layer_index", columns="alpha", values="value", aggfunc="mean")
        t.index = [
            clean.drop_duplicates("layer_index").set_index("layer_index").loc[i, "layer"] for i in t.index
        ]
        click.echo(f"clean PCA dimensionality ({share:g} of variance), mean over runs, by alpha:")
        _print_frame(t, ".2f", index=True)


# --------------------------------------------------------------------------- corrupt
@click.command()
@data_option()
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output CIFAR-10-C directory.")
@click.option(
    "--params",
    type=click.Choice(["cifar10", "tinyimagenet"]),
    default="cifar10",
    show_default=True,
    help="Corruption parameters (CIFAR-10-C's for 32 px, Tiny ImageNet-C's for 64 px).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Master seed of the random corruptions.")
@click.option(
    "--images", type=click.IntRange(min=1), default=None, help="Only the first N test images (default: all)."
)
@click.option(
    "--corruptions",
    type=NameList("corruption", CORRUPTIONS, allow_none=False),
    default=None,
    help="Comma-separated corruptions (default: all 15).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def corrupt(data, out, params, seed, images, corruptions, quiet):
    """Write the CIFAR-10 test set corrupted in the CIFAR-10-C format, and a contact sheet PNG."""
    from ..data import contact_sheet_images, load_dataset, write_cifar_c
    from ..plots.perturb import draw_corruption_grid
    from ..plots.style import save_figure

    names = corruptions or CORRUPTIONS
    test = load_dataset("cifar10", data, val_size=0).test  # only the test split is used
    imgs, labels = test.images, test.labels
    if images is not None:
        imgs, labels = imgs[:images], labels[:images]
    bar = None
    if not quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=5 * len(names), desc="corrupt", unit="cell", dynamic_ncols=True)
    try:
        path = write_cifar_c(
            out,
            imgs,
            labels,
            names,
            params=params,
            seed=seed,
            progress=(lambda _n, _s: bar.update(1)) if bar else None,
        )
    finally:
        if bar is not None:
            bar.close()
    sheet, sheet_names = contact_sheet_images(path, 0, list(names))
    png = save_figure(draw_corruption_grid(sheet, sheet_names), Path(out) / "contact_sheet.png", dpi=120)
    click.echo(f"wrote {path} ({len(names)} corruptions x 5 severities, {imgs.shape[0]} images) and {png}")
