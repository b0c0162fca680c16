"""Per-run analyses of a sweep: ``cca``, ``robustness``, ``geometry``; and ``corrupt``."""

from __future__ import annotations

from pathlib import Path

import click

from ..analysis.robustness import EXTRA_CORRUPTIONS
from ..perturb import ATTACKS, CORRUPTIONS
from .options import (
    Command,
    EpsilonList,
    IntList,
    NameList,
    SweepDir,
    data_option,
    device_option,
    pwcca_method_option,
    quiet_option,
    usage_errors,
)

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
@device_option()
@pwcca_method_option("--method")
@click.option(
    "--order",
    type=click.Choice(["baseline-first", "alpha-first"]),
    default="baseline-first",
    show_default=True,
    help="Network order of a between pair (paper 1, A.2: the alpha = 0 network first).",
)
@quiet_option()
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
    from ..evaluate.cca import CCASettings, cca_summary, sweep_cca

    with usage_errors():
        settings = CCASettings(
            model=model,
            n_images=images,
            mode=mode,
            max_pairs=max_pairs,
            min_ratio=min_ratio,
            exclude_same_seed=exclude_same_seed,
            method=method,
            order=order,
        )
    df = sweep_cca(
        sweep_dir,
        settings,
        data,
        device=device,
        progress=not quiet,
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
#: Corruption names the commands accept: the 15 generated types and the release's 4 extra ones.
RELEASE_CORRUPTIONS = (*CORRUPTIONS, *EXTRA_CORRUPTIONS)
_CORRUPTIONS_HELP = (
    "Comma-separated corruptions; 'none' for none. The 4 extra types of the CIFAR-10-C release "
    f"({', '.join(EXTRA_CORRUPTIONS)}) are read from --corrupted only."
)


def _corruption_names(names: tuple[str, ...] | None, default: tuple[str, ...]) -> tuple[str, ...]:
    """``None`` -> ``default``; ``("all",)`` -> the 19 types of the release."""
    if names is None:
        return default
    return RELEASE_CORRUPTIONS if names == ("all",) else names


def _perturbation_options(f):
    """Options shared by `robustness` and `geometry`: corruptions and the FGSM/PGD attacks."""
    options = [
        click.option(
            "--corruptions",
            type=NameList("corruption", (*RELEASE_CORRUPTIONS, "all")),
            default=None,
            help=_CORRUPTIONS_HELP + " 'all': the 19 types of the release.",
        ),
        click.option(
            "--severities", type=IntList(), default=None, help="Comma-separated severities in 1..5."
        ),
        click.option(
            "--params",
            type=click.Choice(["auto", "cifar10", "tinyimagenet"]),
            default=None,
            help="Parameters of the generated corruptions; auto: Tiny ImageNet-C's for tiny-imagenet "
            "runs, CIFAR-10-C's otherwise.",
        ),
        click.option(
            "--corruption-seed",
            type=click.IntRange(min=0),
            default=None,
            help="Seed of the generated corruptions.",
        ),
        click.option(
            "--corrupted",
            type=click.Path(),
            default=None,
            help="Read corrupted images from this directory instead of generating them: CIFAR-10-C format "
            "(labels.npy, <corruption>.npy; the release's 19 types) or Tiny ImageNet-C format "
            "(<corruption>/<severity>/<wnid>/*.JPEG), holding the whole test split.",
        ),
        click.option(
            "--epsilons",
            type=EpsilonList(),
            default=None,
            help="FGSM and PGD budgets in [0, 1] pixel units, comma-separated, fractions allowed "
            "(e.g. 1/255,8/255); 'none' for none.",
        ),
        click.option(
            "--norm",
            type=click.Choice(["linf", "l2"]),
            default=None,
            help="Norm of the attack budgets (L-infinity or L2).",
        ),
        click.option("--pgd-steps", type=click.IntRange(min=1), default=None, help="PGD iterations."),
        click.option(
            "--pgd-step-factor",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            help="PGD step size = factor * epsilon / steps (Madry et al.: 2.5).",
        ),
        click.option("--pgd-restarts", type=click.IntRange(min=1), default=None, help="PGD random restarts."),
        click.option(
            "--attack-seed",
            type=click.IntRange(min=0),
            default=None,
            help="Seed of the attacks' random starts (one generator per attack and epsilon).",
        ),
        click.option(
            "--image-seed",
            type=click.IntRange(min=0),
            default=None,
            help="Seed of the class-stratified image subset.",
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(min=1),
            default=None,
            help="Images per forward pass and attack batch (it orders the attacks' random draws).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _given(**kw):
    """The options given on the command line (None: not given)."""
    return {k: v for k, v in kw.items() if v is not None}


@click.command(cls=Command, renamed={"--seed": "--corruption-seed", "--cifar10-c": "--corrupted"})
@click.argument("sweep_dir", type=SweepDir())
@data_option()
@click.option(
    "--images",
    type=click.IntRange(min=0),
    default=2000,
    show_default=True,
    help="Test images (a class-stratified subset, the same for every run); 0: the whole test split.",
)
@_perturbation_options
@click.option(
    "--attacks",
    type=NameList("attack", tuple(ATTACKS)),
    default="fgsm,pgd,apgd-ce,apgd-ensemble",
    show_default=True,
    help="Comma-separated attacks; 'none' for none. apgd-ensemble is the AutoAttack-style accuracy "
    "(robust only if APGD-CE and APGD-T both fail).",
)
@click.option(
    "--apgd-epsilons",
    type=EpsilonList(allow_none=False),
    default=None,
    help="Budgets of the APGD attacks (default 8/255, RobustBench's L-inf standard).",
)
@click.option(
    "--apgd-steps", type=click.IntRange(min=1), default=100, show_default=True, help="APGD iterations."
)
@click.option(
    "--apgd-restarts", type=click.IntRange(min=1), default=1, show_default=True, help="APGD random restarts."
)
@click.option(
    "--apgd-target-classes",
    type=click.IntRange(min=1),
    default=9,
    show_default=True,
    help="Target classes of APGD-T (AutoAttack's standard version: 9).",
)
@device_option()
@click.option("--force", is_flag=True, help="Recompute runs that have results of these settings.")
@quiet_option()
def robustness(
    sweep_dir,
    data,
    images,
    corruptions,
    severities,
    params,
    corruption_seed,
    corrupted,
    epsilons,
    norm,
    pgd_steps,
    pgd_step_factor,
    pgd_restarts,
    attack_seed,
    image_seed,
    batch_size,
    attacks,
    apgd_epsilons,
    apgd_steps,
    apgd_restarts,
    apgd_target_classes,
    device,
    force,
    quiet,
):
    """Corruption and adversarial accuracy of every completed run (paper 2) -> RUN/robustness/<key>.json.

    Results of other settings are kept beside them; the same settings are reused.
    Defaults: the 15 corruptions at severities 1..5, FGSM and PGD-10 at 0.25/255 ... 8/255,
    APGD-CE and the AutoAttack-style ensemble at 8/255 (100 iterations).
    """
    from ..evaluate.robustness import RobustnessSettings, sweep_robustness

    with usage_errors():
        settings = RobustnessSettings(
            n_images=images or None,
            attacks=attacks,
            apgd_steps=apgd_steps,
            apgd_restarts=apgd_restarts,
            apgd_target_classes=apgd_target_classes,
            device=device,
            **_given(
                corruptions=_corruption_names(corruptions, RobustnessSettings.corruptions),
                severities=severities,
                params=params,
                corruption_seed=corruption_seed,
                corrupted=corrupted,
                epsilons=epsilons,
                norm=norm,
                pgd_steps=pgd_steps,
                pgd_step_factor=pgd_step_factor,
                pgd_restarts=pgd_restarts,
                attack_seed=attack_seed,
                image_seed=image_seed,
                batch_size=batch_size,
                apgd_epsilons=apgd_epsilons,
            ),
        )
    df = sweep_robustness(
        sweep_dir, settings, data, progress=not quiet, force=force, log=lambda m: click.echo(m, err=True)
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
class EarlyLayers(click.ParamType):
    """``--early-layers``: a count, a fraction or layer names (the library's parser)."""

    name = "early-layers"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "K|F|A,B,..."

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        from ..evaluate.geometry import parse_early_layers

        try:
            return parse_early_layers(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


@click.command(cls=Command, renamed={"--attack-steps": "--pgd-steps", "--severity": "--severities"})
@click.argument("sweep_dir", type=SweepDir())
@data_option()
@click.option(
    "--images",
    type=click.IntRange(min=2),
    default=None,
    help="Stratified test images, the same for every run (default: the robustness step's, 2000 without one).",
)
@click.option(
    "--layers",
    type=NameList("layer", allow_none=False),
    default=None,
    help="Comma-separated layers (default: the run's selectivity layers).",
)
@click.option(
    "--early-layers",
    type=EarlyLayers(),
    default="1/3",
    show_default=True,
    help="Which measured layers count as early: a count (3), a fraction (1/3, 0.5) or names (a,b).",
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
    help="Estimator: channel means (streamed covariance) or flattened maps, every channel x position "
    "(spectrum of the N x N Gram matrix).",
)
@click.option(
    "--positions",
    type=click.IntRange(min=1),
    default=None,
    help="With --units flatten: random spatial positions kept per map (default: all).",
)
@click.option(
    "--min-ratio",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Images per unit required with --units channels (N >= ceil(ratio * U) + 1).",
)
@_perturbation_options
@click.option(
    "--attacks",
    type=NameList("attack", ("fgsm", "pgd")),
    default=None,
    help="Attacks (fgsm, pgd); 'none' for none (default: those of the robustness step).",
)
@click.option(
    "--match/--no-match",
    default=False,
    show_default=True,
    help="Sensitivity analysis: also L2 PGD at each corruption's median input L2 distance.",
)
@click.option(
    "--match-severity",
    type=click.IntRange(1, 5),
    default=3,
    show_default=True,
    help="The severity whose median distances the matched attacks take.",
)
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
@device_option()
@click.option("--force", is_flag=True, help="Recompute runs that have results of these settings.")
@quiet_option()
def geometry(
    sweep_dir,
    data,
    images,
    layers,
    early_layers,
    share,
    units,
    positions,
    min_ratio,
    corruptions,
    severities,
    params,
    corruption_seed,
    corrupted,
    epsilons,
    norm,
    pgd_steps,
    pgd_step_factor,
    pgd_restarts,
    attack_seed,
    image_seed,
    batch_size,
    attacks,
    match,
    match_severity,
    gradient_images,
    gradient_layers,
    device,
    force,
    quiet,
):
    """Dimensionality (clean, perturbed, increase, change) and gradient variability of every completed run.

    The perturbations default to those of the robustness step: the settings stored with the
    sweep's robustness results, else its sweep.json's, else the robustness defaults (every
    corruption at every severity, FGSM and PGD at its epsilons); options given here replace them.
    Results: runs/<id>/geometry/<key>.json (other settings kept beside them) and the `geometry` table (`selectivity results --geometry`).
    """
    from ..evaluate.geometry import GeometrySettings, sweep_geometry
    from ..evaluate.robustness import sweep_robustness_settings

    base, where = sweep_robustness_settings(sweep_dir)
    click.echo(f"perturbations: those of the robustness step ({where}), options given here on top", err=True)
    with usage_errors():
        settings = GeometrySettings.matching(
            base,
            layers=layers or None,
            early_layers=early_layers,
            share=share,
            units=units,
            positions=positions,
            min_ratio=min_ratio,
            match_l2=match,
            match_severity=match_severity,
            gradient_images=gradient_images,
            gradient_layers=gradient_layers or None,
            **_given(
                n_images=images,
                corruptions=_corruption_names(corruptions, base.corruptions)
                if corruptions is not None
                else None,
                severities=severities,
                params=params,
                corruption_seed=corruption_seed,
                corrupted=corrupted,
                attacks=attacks,
                epsilons=epsilons,
                norm=norm,
                pgd_steps=pgd_steps,
                pgd_step_factor=pgd_step_factor,
                pgd_restarts=pgd_restarts,
                attack_seed=attack_seed,
                image_seed=image_seed,
                batch_size=batch_size,
            ),
        )
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
@click.command(cls=Command, renamed={"--seed": "--corruption-seed"})
@data_option()
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output CIFAR-10-C directory.")
@click.option(
    "--params",
    type=click.Choice(["cifar10", "tinyimagenet"]),
    default="cifar10",
    show_default=True,
    help="Corruption parameters (CIFAR-10-C's for 32 px, Tiny ImageNet-C's for 64 px).",
)
@click.option(
    "--corruption-seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Master seed of the random corruptions.",
)
@click.option(
    "--images", type=click.IntRange(min=1), default=None, help="Only the first N test images (default: all)."
)
@click.option(
    "--corruptions",
    type=NameList("corruption", CORRUPTIONS, allow_none=False),
    default=None,
    help="Comma-separated corruptions (default: all 15).",
)
@quiet_option()
def corrupt(data, out, params, corruption_seed, images, corruptions, quiet):
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

        bar = tqdm(total=5 * len(names), desc="corrupt", unit="cell", dynamic_ncols=True, disable=None)
    try:
        path = write_cifar_c(
            out,
            imgs,
            labels,
            names,
            params=params,
            seed=corruption_seed,
            progress=(lambda _n, _s: bar.update(1)) if bar else None,
        )
    finally:
        if bar is not None:
            bar.close()
    sheet, sheet_names = contact_sheet_images(path, 0, list(names))
    png = save_figure(draw_corruption_grid(sheet, sheet_names), Path(out) / "contact_sheet.png", dpi=120)
    click.echo(f"wrote {path} ({len(names)} corruptions x 5 severities, {imgs.shape[0]} images) and {png}")
