"""Command-line interface: ``selectivity train | measure | sweep | results | summarize | report | cca |
robustness | corrupt | geometry``.

The top layer: it parses options and calls the package (report -> evaluate -> sweep ->
train -> core); nothing imports it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..data import DATASETS
from ..run.config import ConfigError, list_presets, make_config, parse_overrides
from ..run.files import FINAL_STATUSES, SweepFiles

DATA_HELP = (
    "Dataset location: a file or directory (CIFAR-10 python release, or an image-folder tree "
    "train/<class>/, test/<class>/, or a .tar.gz of one). Default: $SELECTIVITY_DATA, then the "
    "per-user cache, then a download."
)


def _fail(msg: str) -> None:
    raise click.UsageError(msg)


def _build_config(preset, model, overrides: dict, sets: tuple[str, ...]):
    try:
        extra = parse_overrides(list(sets))
        values = {**extra, **{k: v for k, v in overrides.items() if v is not None}}
        if model is not None:
            values["model"] = model
        return make_config(preset, values)
    except ConfigError as e:
        _fail(str(e))


class _DataError(click.ClickException):
    """One line on stderr (``Error: ...``), exit code 1: the data or files are wrong."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))


class _UsageError(_DataError):
    """One line on stderr, exit code 2: the command line or config is wrong."""

    exit_code = 2


def _user_error(e: BaseException) -> click.ClickException | None:
    """The one-line error a known user mistake becomes, or None for a bug (traceback)."""
    if isinstance(e, ConfigError):
        return _UsageError(str(e))
    if isinstance(e, sqlite3.DatabaseError):
        return _DataError(
            f"the results database cannot be read ({e}); run `selectivity results --rebuild SWEEP_DIR`"
        )
    if isinstance(e, (ValueError, OSError)):  # bad data, damaged files, missing paths, busy run
        return _DataError(str(e) or type(e).__name__)
    return None


class FuseSize(click.ParamType):
    """``--fuse``: an integer >= 1 or ``auto``."""

    name = "fuse"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        if text.isdigit() and int(text) >= 1:
            return int(text)
        self.fail(f"expected an integer >= 1 or 'auto', got {value!r}", param, ctx)


class _Main(click.Group):
    """The command group; turns known user errors into one line instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as e:
            debug = ctx.params.get("debug") or os.environ.get("SELECTIVITY_DEBUG", "") not in ("", "0")
            err = None if debug else _user_error(e)
            if err is None:
                raise
            raise err from e


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="selectivity")
@click.option(
    "--debug",
    is_flag=True,
    help="Show the full traceback of an error (also: SELECTIVITY_DEBUG=1).",
)
def main(debug: bool) -> None:
    """Class selectivity of units in neural networks (Leavitt & Morcos).

    Measure it, regularise it (loss = CE - alpha * mean SI), and run the papers'
    alpha sweeps.
    """


# --------------------------------------------------------------------------- train
@main.command()
@click.option("--model", default=None, help="Model name (see `selectivity models`). Default: resnet20.")
@click.option(
    "--alpha", type=float, default=None, help="Regulariser strength: < 0 penalises, > 0 promotes selectivity."
)
@click.option("--seed", type=int, default=None, help="Seed of initialisation, shuffling and augmentation.")
@click.option(
    "--preset", default="paper", show_default=True, help="Named preset (see `selectivity presets`)."
)
@click.option(
    "--dataset",
    type=click.Choice(list(DATASETS)),
    default=None,
    help="Dataset (default cifar10; tiny-imagenet with --model resnet18).",
)
@click.option("--data", type=click.Path(), default=None, help=DATA_HELP)
@click.option(
    "--out",
    type=click.Path(),
    required=True,
    help="Run directory (created; an unfinished run there is resumed).",
)
@click.option("--epochs", type=int, default=None, help="Override the number of epochs.")
@click.option(
    "--train-subset", type=int, default=None, help="Train on a stratified subset of this many images."
)
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override any config field, e.g. --set lr=0.05 (repeatable).",
)
@click.option("--quiet", is_flag=True, help="No progress bars or per-epoch lines.")
def train(model, alpha, seed, preset, dataset, data, out, epochs, train_subset, device, sets, quiet):
    """Train one model with the selectivity regulariser into a run directory."""
    from ..training.single import train_run

    cfg = _build_config(
        preset,
        model,
        {
            "alpha": alpha,
            "seed": seed,
            "epochs": epochs,
            "dataset": dataset,
            "train_subset": train_subset,
            "device": device,
        },
        sets,
    )
    try:
        _preflight(out)
        # train_run takes the run lock and checks device, data and checkpoint before it writes.
        result = train_run(
            cfg,
            out,
            data=data,
            progress=not quiet,
            log=(lambda m: None) if quiet else (lambda m: click.echo(m, err=True)),
        )
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(
        json.dumps(
            {
                k: result.get(k)
                for k in (
                    "status",
                    "test_accuracy",
                    "best_val_accuracy",
                    "best_epoch",
                    "mean_selectivity",
                    "message",
                )
            }
        )
    )
    if result.get("status") == "diverged":
        sys.exit(3)


def _preflight(out):
    """Refuse a damaged run directory before training, naming the damaged files."""
    from ..run.files import RunFiles
    from ..run.health import inspect_run_dir

    if RunFiles(out).root.is_dir():
        h = inspect_run_dir(out)
        if not h.ok:
            raise click.ClickException(
                " ".join(
                    f"damaged run directory: {h.describe()}; move the damaged files away (or delete {out}) "
                    "to train it again".split()
                )
            )


# --------------------------------------------------------------------------- measure
@main.command()
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--data", type=click.Path(), default=None, help=DATA_HELP)
@click.option(
    "--split",
    type=click.Choice(["test", "val"]),
    default="test",
    show_default=True,
    help="Which split to measure.",
)
@click.option(
    "--top-n",
    type=int,
    default=None,
    help="Samples per unit for precision (default: the run's top_n, 1000 in the paper).",
)
@click.option("--batch-size", type=int, default=1000, show_default=True, help="Evaluation batch size.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def measure(checkpoint, data, split, top_n, batch_size, device, as_json):
    """Per-layer selectivity, dead units and precision of a checkpoint or run directory."""
    from ..core.measure import measure_selectivity
    from ..data import BatchLoader, check_data_matches_checkpoint
    from ..run.checkpoint import load_data, load_model_from
    from ..run.config import resolve_device

    if top_n is not None and top_n < 1:
        _fail("--top-n must be >= 1")
    if batch_size < 1:
        _fail("--batch-size must be >= 1")
    try:
        dev = resolve_device(device)  # a ValueError when the device is not here
        model, cfg, ckpt = load_model_from(checkpoint, dev)
        splits = load_data(cfg, data)
        check_data_matches_checkpoint(ckpt, splits, name=str(checkpoint))
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise click.ClickException(str(e)) from e
    ds = splits.test if split == "test" else splits.val
    loader = BatchLoader(ds, batch_size, mean=splits.mean, std=splits.std, device=dev)
    rep = measure_selectivity(
        model,
        loader,
        splits.num_classes,
        layers=cfg.selectivity_layers or None,
        top_n=top_n or cfg.top_n,
        negative=cfg.negative_rule,
        device=dev,
        progress=not as_json,
    )
    d = rep.to_dict()
    d.update(checkpoint=str(checkpoint), split=split, model=cfg.model, alpha=cfg.alpha)
    if as_json:
        from ..run.files import clean_json

        click.echo(json.dumps(clean_json(d), indent=2))
        return
    click.echo(
        f"{cfg.model} alpha={cfg.alpha} on {split} ({rep.num_samples} samples): "
        f"accuracy {rep.accuracy:.4f}, mean selectivity {rep.mean_selectivity:.4f}, "
        f"mean precision {rep.mean_precision:.4f}, dead {rep.dead_fraction:.2%}"
    )
    w = max(len(l["layer"]) for l in d["layers"])
    click.echo(f"{'layer':<{w}}  units  selectivity  dead    precision")
    for l in d["layers"]:
        click.echo(
            f"{l['layer']:<{w}}  {l['units']:>5}  {l['selectivity']:>11.4f}  "
            f"{l['dead_fraction']:>6.1%}  {l['precision']:>9.4f}"
        )


# --------------------------------------------------------------------------- sweep
@main.command()
@click.option(
    "--preset",
    default=None,
    help="Sweep preset: quick (CPU, ~15 min) or paper (GPUs/cluster); see `selectivity presets`.",
)
@click.option("--models", default=None, help="Comma-separated model names, e.g. resnet20,vgg16.")
@click.option(
    "--alphas",
    default=None,
    help="Comma-separated alphas, e.g. --alphas=-1,0,1 (use = before a leading minus).",
)
@click.option("--seeds", default=None, help="A count (20 -> seeds 0..19), a list (0,4,9) or a range (10-19).")
@click.option(
    "--train-preset",
    default=None,
    help="Training preset of every run (default: the sweep preset's, else paper).",
)
@click.option(
    "--out",
    type=click.Path(),
    required=True,
    help="Sweep directory (runs/, results.sqlite, summary, figures).",
)
@click.option("--data", type=click.Path(), default=None, help=DATA_HELP)
@click.option("--epochs", type=int, default=None, help="Override the epochs of every run.")
@click.option(
    "--train-subset",
    type=int,
    default=None,
    help="Train every run on a stratified subset of this many images.",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Config override for every run (repeatable), e.g. --set activation=leaky_relu.",
)
@click.option(
    "--grid",
    "grids",
    multiple=True,
    metavar="KEY=V1,V2",
    help="Extra sweep axis (repeatable), e.g. --grid negative_slope=0.1,0.3.",
)
@click.option(
    "--executor",
    type=click.Choice(["inprocess", "process", "ray"]),
    default=None,
    help="Where runs execute (default: the preset's, else inprocess).",
)
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Parallel runs for the process executor (default: CPU count) or CPUs of a local Ray instance.",
)
@click.option(
    "--address",
    default=None,
    help="Ray cluster address (e.g. auto or ray://head:10001); default: start a local Ray.",
)
@click.option(
    "--cpus-per-run",
    type=float,
    default=1,
    show_default=True,
    help="CPUs each run requests (Ray) / torch threads per worker.",
)
@click.option(
    "--gpus-per-run", type=float, default=0, show_default=True, help="GPUs each run requests (Ray)."
)
@click.option(
    "--fuse",
    type=FuseSize(),
    default="1",
    show_default=True,
    metavar="R|auto",
    help="Train up to R runs that differ only in seed and alpha as one fused model: one task "
    "(process, Ray task; --cpus/gpus-per-run apply to it) per group. Each run keeps its own "
    "directory, database row and resume; 1 trains one run per task; auto: as many as fit the "
    "GPU's memory, measured on this machine (1 on a CPU).",
)
@click.option("--no-summary", is_flag=True, help="Skip the summary table and figures at the end.")
@click.option(
    "--no-robustness",
    is_flag=True,
    help="Skip the preset's robustness evaluation after training (see `selectivity robustness`).",
)
@click.option(
    "--no-geometry",
    is_flag=True,
    help="Skip the preset's geometry step after training (see `selectivity geometry`).",
)
@click.option(
    "--corrupted",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="The robustness step reads corrupted images from this CIFAR-10-C or Tiny ImageNet-C "
    "directory instead of generating them.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="List the runs of the grid (and which are finished) without running anything.",
)
@click.option(
    "--archive-mismatched",
    is_flag=True,
    help="Move runs trained with another configuration to OUT/archive/ and train them again "
    "(without it such runs stop the sweep).",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def sweep(
    preset,
    models,
    alphas,
    seeds,
    train_preset,
    out,
    data,
    epochs,
    train_subset,
    sets,
    grids,
    executor,
    workers,
    address,
    cpus_per_run,
    gpus_per_run,
    fuse,
    no_summary,
    no_robustness,
    no_geometry,
    corrupted,
    dry_run,
    archive_mismatched,
    quiet,
):
    """Train a grid of models x alphas x seeds; resumable (run it again to continue)."""
    from ..sweep import SweepSpec, get_sweep_preset, parse_floats, parse_grid, parse_seeds, run_sweep

    try:
        if preset is not None:
            spec = get_sweep_preset(preset)
        elif models is None or alphas is None or seeds is None:
            raise ConfigError("give --preset, or all of --models, --alphas and --seeds")
        else:
            spec = SweepSpec(models=[], alphas=[], seeds=[])
        if models is not None:
            spec.models = [m.strip() for m in models.split(",") if m.strip()]
        if alphas is not None:
            spec.alphas = parse_floats(alphas)
        if seeds is not None:
            spec.seeds = parse_seeds(seeds)
        if train_preset is not None:
            spec.preset = train_preset
        over = dict(spec.overrides)
        over.update(parse_overrides(list(sets)))
        if epochs is not None:
            over["epochs"] = epochs
        if train_subset is not None:
            over["train_subset"] = train_subset
        spec.overrides = over
        spec.grid.update(parse_grid(grids))
        spec.validate()
    except ConfigError as e:
        _fail(str(e))
    if workers is not None and workers < 1:
        _fail("--workers must be >= 1")
    executor = executor or spec.executor or "inprocess"
    workers = workers or spec.workers
    if dry_run:
        from ..run.files import DamagedFileError, read_json

        runs = spec.runs()
        done = 0
        for r in runs:
            f = SweepFiles(out).run(r.run_id).result
            try:
                status = read_json(f).get("status") if f.exists() else "to run"
            except DamagedFileError:
                status = "damaged"
            done += status in FINAL_STATUSES
            click.echo(f"{r.run_id}\t{status}")
        click.echo(
            f"{len(runs)} runs ({done} finished); executor {executor}"
            + (f", {workers} workers" if workers else ""),
            err=True,
        )
        return
    try:
        df = run_sweep(
            spec,
            out,
            executor=executor,
            workers=workers,
            data=data,
            address=address,
            cpus_per_run=cpus_per_run,
            gpus_per_run=gpus_per_run,
            progress=not quiet,
            log=lambda m: click.echo(m, err=True),
            archive_mismatched=archive_mismatched,
            fuse=fuse,
        )
    except RuntimeError as e:
        raise click.ClickException(str(e)) from e
    if (df.status == "completed").any():
        from ..evaluate.steps import run_steps

        run_steps(
            out,
            spec,
            data,
            corrupted=corrupted,
            robustness=not no_robustness,
            geometry=not no_geometry,
            progress=not quiet,
            log=lambda m: click.echo(m, err=True),
        )
    if not no_summary:
        from ..report import summarize_sweep

        summarize_sweep(out, log=lambda m: click.echo(m, err=True))
    if (df.status == "failed").any():
        sys.exit(2)


def _sweep_dir(path: str) -> Path:
    files = SweepFiles(path)
    if not files.is_sweep_dir():
        raise click.ClickException(
            f"{files.root} is not a sweep directory (no {files.runs.name}/ or {files.db.name})"
        )
    return files.root


@main.command()
@click.argument("sweep_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="Output format (csv/json load straight into pandas).",
)
@click.option("--layers", is_flag=True, help="Per-layer rows instead of one row per run.")
@click.option("--rebuild", is_flag=True, help="Recreate the database from the run directories first.")
@click.option(
    "--robustness",
    type=click.Choice(["summary", "corruptions", "attacks"]),
    default=None,
    is_flag=False,
    flag_value="summary",
    help="Robustness rows (paper 2) instead: per-run summary (default), or long corruption / attack rows.",
)
@click.option(
    "--geometry",
    "geometry_rows",
    is_flag=True,
    help="Rows of the geometry table (`selectivity geometry`): run, layer, perturbation, measure, value.",
)
def results(sweep_dir, fmt, layers, rebuild, robustness, geometry_rows):
    """Print a sweep's results (one row per run), from its results database."""
    from ..sweep import open_store, rebuild_store

    if robustness and geometry_rows:
        _fail("--robustness and --geometry are different tables: give one")
    p = _sweep_dir(sweep_dir)
    store = rebuild_store(p) if rebuild else open_store(p)
    with store:
        if robustness:
            df = store.robustness_df(robustness)
        elif geometry_rows:
            df = store.geometry_df()
        else:
            df = store.layers_df() if layers else store.runs_df()
    if geometry_rows:
        if fmt == "table":
            import pandas as pd

            if df.empty:
                click.echo("no geometry results: run `selectivity geometry SWEEP_DIR` first", err=True)
                return
            cols = ["run_id", "alpha", "seed", "layer", "perturbation", "measure", "value"]
            with pd.option_context("display.max_rows", None, "display.width", 200):
                click.echo(df[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        elif fmt == "csv":
            click.echo(df.to_csv(index=False), nl=False)
        else:
            click.echo(df.to_json(orient="records", indent=1))
        return
    if robustness:
        if robustness == "summary":
            df = df.drop(columns=["settings"])
        if fmt == "table":
            import pandas as pd

            with pd.option_context(
                "display.max_rows", None, "display.width", 200, "display.max_columns", None
            ):
                click.echo(df.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
            return
    elif not layers:
        df = df.drop(columns=["config"])
    if fmt == "csv":
        click.echo(df.to_csv(index=False), nl=False)
    elif fmt == "json":
        click.echo(df.to_json(orient="records", indent=1))
    else:
        import pandas as pd

        cols = (
            ["run_id", "layer", "units", "selectivity", "dead_fraction", "precision"]
            if layers
            else [
                "run_id",
                "status",
                "test_accuracy",
                "best_val_accuracy",
                "best_epoch",
                "mean_selectivity",
                "mean_precision",
                "dead_fraction",
                "train_seconds",
            ]
        )
        with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_columns", None):
            click.echo(df[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))


@main.command()
@click.argument("sweep_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--no-figures", is_flag=True, help="Only the table.")
def summarize(sweep_dir, no_figures):
    """Summary table (mean and bootstrapped 95% CI per model and alpha) and figures of a sweep."""
    from ..report import summarize_sweep

    out = summarize_sweep(_sweep_dir(sweep_dir), log=click.echo, figures=not no_figures)
    for k, v in out.items():
        click.echo(f"wrote {k}: {v}", err=True)


# --------------------------------------------------------------------------- report / cca
def _pwcca_method_option(flag: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The option ``flag`` choosing the PWCCA method (`report --cca-method`, `cca --method`)."""
    return click.option(
        flag,
        type=click.Choice(["svcca", "textbook"]),
        default="svcca",
        show_default=True,
        help="PWCCA as the paper computed it (google/svcca's reference code) or the canonical-variate form.",
    )


@main.command()
@click.argument("sweep_dir", type=click.Path(exists=True, file_okay=False))
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
@click.option(
    "--data",
    type=click.Path(),
    default=None,
    help="Dataset for the CCA (default: the sweep's, then $SELECTIVITY_DATA; never downloaded).",
)
@click.option(
    "--cca-images",
    type=int,
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
    "--cca-max-pairs", type=int, default=None, help="Cap on CCA pairs per alpha and kind (default: all)."
)
@_pwcca_method_option("--cca-method")
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
    type=int,
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

    if cca_images < 2:
        _fail("--cca-images must be >= 2")
    if cca_max_pairs is not None and cca_max_pairs < 1:
        _fail("--cca-max-pairs must be >= 1")
    if resamples < 1:
        _fail("--resamples must be >= 1")
    path = build_report(
        _sweep_dir(sweep_dir),
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


@main.command()
@click.argument("sweep_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--data", type=click.Path(), default=None, help=DATA_HELP)
@click.option("--model", default=None, help="Only this model's runs (default: every model).")
@click.option(
    "--images",
    type=int,
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
    type=int,
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
@_pwcca_method_option("--method")
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

    if images < 2:
        _fail("--images must be >= 2")
    if max_pairs is not None and max_pairs < 1:
        _fail("--max-pairs must be >= 1")
    try:
        df = cca_distances(
            _sweep_dir(sweep_dir),
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
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        raise click.ClickException(str(e)) from e
    _, _, tests = cca_summary(df)
    if not tests.empty:
        import pandas as pd

        cols = [
            c
            for c in ("model", "alpha", "n", "mean_between", "mean_within", "ratio", "p_bonferroni", "note")
            if c in tests.columns
        ]
        with pd.option_context("display.width", 200, "display.max_columns", None):
            click.echo(tests[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))


# --------------------------------------------------------------------------- robustness (paper 2)
def _split_names(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return tuple(p.strip() for p in text.split(",") if p.strip())


# --------------------------------------------------------------------------- geometry
def _names(value: str | None) -> tuple[str, ...] | None:
    """Like :func:`_split_names`, but None also for a list of no names."""
    return _split_names(value) or None


def _epsilons(value: str) -> tuple[float, ...]:
    """``1/255,4/255`` or ``0.004,0.016`` -> floats; an empty string: no L-inf attack."""
    out = []
    for v in value.split(","):
        v = v.strip()
        if not v:
            continue
        try:
            num, _, den = v.partition("/")
            out.append(float(num) / (float(den) if den else 1.0))
        except (ValueError, ZeroDivisionError):
            _fail(f"--epsilons: {v!r} is not a number or a fraction like 4/255")
    return tuple(out)


@main.command()
@click.argument("sweep_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--data", type=click.Path(), default=None, help=DATA_HELP)
@click.option(
    "--images",
    type=int,
    default=2000,
    show_default=True,
    help="Test images (a class-stratified subset, the same for every run); 0: the whole test split.",
)
@click.option(
    "--corruptions", default=None, help="Comma-separated corruptions (default: all 15); 'none' for none."
)
@click.option(
    "--severities", default="1,2,3,4,5", show_default=True, help="Comma-separated severities in 1..5."
)
@click.option(
    "--attacks", default="fgsm,pgd", show_default=True, help="Comma-separated attacks; 'none' for none."
)
@click.option(
    "--epsilons",
    default=None,
    help="Comma-separated budgets in [0, 1] pixel units, fractions allowed (default: 0.25/255,0.5/255,1/255,2/255,4/255,8/255).",
)
@click.option("--norm", type=click.Choice(["linf", "l2"]), default="linf", show_default=True)
@click.option(
    "--pgd-steps", type=int, default=10, show_default=True, help="PGD iterations (step 2.5*eps/steps)."
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
@click.option("--batch-size", type=int, default=250, show_default=True)
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
    from ..evaluate.robustness import RobustnessSettings, parse_epsilons, sweep_robustness

    try:
        sev = tuple(int(v) for v in _split_names(severities) or ())
    except ValueError:
        raise _UsageError(f"--severities must be integers in 1..5, got {severities!r}") from None
    corr = _split_names(corruptions)
    atk = _split_names(attacks) or ()
    try:
        settings = RobustnessSettings(
            n_images=images or None,
            corruptions=()
            if corr == ("none",)
            else (corr if corr is not None else RobustnessSettings.corruptions),
            severities=sev,
            attacks=() if atk == ("none",) else atk,
            epsilons=parse_epsilons(epsilons) if epsilons else RobustnessSettings.epsilons,
            norm=norm,
            pgd_steps=pgd_steps,
            corrupted=corrupted,
            params=params,
            corruption_seed=seed,
            batch_size=batch_size,
            device=device,
        )
    except ValueError as e:
        raise _UsageError(str(e)) from e
    df = sweep_robustness(
        _sweep_dir(sweep_dir), settings, data, progress=not quiet, log=lambda m: click.echo(m, err=True)
    )
    import pandas as pd

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
    with pd.option_context("display.width", 200, "display.max_columns", None, "display.max_rows", None):
        click.echo(df[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))


@main.command()
@click.option("--data", type=click.Path(), default=None, help=DATA_HELP)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output CIFAR-10-C directory.")
@click.option(
    "--params",
    type=click.Choice(["cifar10", "tinyimagenet"]),
    default="cifar10",
    show_default=True,
    help="Corruption parameters (CIFAR-10-C's for 32 px, Tiny ImageNet-C's for 64 px).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Master seed of the random corruptions.")
@click.option("--images", type=int, default=None, help="Only the first N test images (default: all).")
@click.option("--corruptions", default=None, help="Comma-separated corruptions (default: all 15).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def corrupt(data, out, params, seed, images, corruptions, quiet):
    """Write the CIFAR-10 test set corrupted in the CIFAR-10-C format, and a contact sheet PNG."""
    from ..data import contact_sheet_images, load_dataset, write_cifar_c
    from ..perturb import CORRUPTIONS

    names = _split_names(corruptions) or CORRUPTIONS
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise _UsageError(f"unknown corruption {unknown[0]!r}: expected one of {', '.join(CORRUPTIONS)}")
    if images is not None and images < 1:
        raise _UsageError(f"--images must be >= 1, got {images}")
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
    from ..plots.perturb import draw_corruption_grid

    sheet, sheet_names = contact_sheet_images(path, 0, list(names))
    ax = draw_corruption_grid(sheet, sheet_names)
    png = Path(out) / "contact_sheet.png"
    from matplotlib.figure import Figure

    fig = ax.get_figure()
    if not isinstance(fig, Figure):  # draw_corruption_grid makes its own top-level figure
        raise RuntimeError("the contact sheet was drawn into a subfigure")
    fig.savefig(png, dpi=120, bbox_inches="tight")
    click.echo(f"wrote {path} ({len(names)} corruptions x 5 severities, {imgs.shape[0]} images) and {png}")


@main.command()
@click.argument("sweep_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--data", type=click.Path(), default=None, help=DATA_HELP)
@click.option(
    "--images", type=int, default=2000, show_default=True, help="Stratified test images (same for every run)."
)
@click.option(
    "--layers", default=None, help="Comma-separated layers (default: the run's selectivity layers)."
)
@click.option(
    "--share", type=float, default=0.95, show_default=True, help="Variance share of the PCA dimensionality."
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
    default="gaussian_noise,contrast,fog",
    show_default=True,
    help="Comma-separated corruptions (empty: none).",
)
@click.option(
    "--severity", type=click.IntRange(1, 5), default=3, show_default=True, help="Corruption severity."
)
@click.option(
    "--epsilons",
    default="1/255,4/255",
    show_default=True,
    help="L-inf PGD budgets (pixel scale; fractions allowed).",
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
    type=int,
    default=64,
    show_default=True,
    help="Images for the input-unit gradient variability (0: skip).",
)
@click.option("--gradient-layers", default=None, help="Layers for the gradient variability (default: all).")
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

    if not 0 < share <= 1:
        _fail(f"--share must be in (0, 1], got {share:g}")
    if images < 2:
        _fail(f"--images must be >= 2, got {images}")
    if gradient_images < 0 or gradient_images == 1:
        _fail(f"--gradient-images must be 0 (skip) or >= 2, got {gradient_images}")
    settings = GeometrySettings(
        n_images=images,
        layers=_names(layers),
        share=share,
        units=units,
        corruptions=_names(corruptions) or (),
        severity=severity,
        epsilons=_epsilons(epsilons),
        match_l2=match,
        attack_steps=attack_steps,
        gradient_images=gradient_images,
        gradient_layers=_names(gradient_layers),
        batch_size=batch_size,
    )
    try:
        check_settings(settings)
    except ValueError as e:
        _fail(str(e))
    df = sweep_geometry(
        _sweep_dir(sweep_dir),
        settings,
        data,
        device,
        progress=not quiet,
        force=force,
        log=lambda m: click.echo(m, err=True),
    )
    clean = df[(df["measure"] == "pca") & (df["kind"] == "clean")]
    if not clean.empty:
        import pandas as pd

        t = clean.pivot_table(index="layer_index", columns="alpha", values="value", aggfunc="mean")
        t.index = [
            clean.drop_duplicates("layer_index").set_index("layer_index").loc[i, "layer"] for i in t.index
        ]
        click.echo(f"clean PCA dimensionality ({share:g} of variance), mean over runs, by alpha:")
        with pd.option_context("display.width", 200, "display.max_columns", None):
            click.echo(t.to_string(float_format=lambda v: f"{v:.2f}"))


# --------------------------------------------------------------------------- listing
@main.command()
def models() -> None:
    """List the built-in models."""
    from ..models import list_models

    for name in list_models():
        click.echo(name)


@main.command()
def presets() -> None:
    """List the training presets and the sweep presets."""
    from ..sweep import list_sweep_presets

    click.echo("training presets (selectivity train --preset):")
    for name, doc in list_presets().items():
        click.echo(f"  {name:12s} {doc}")
    click.echo("sweep presets (selectivity sweep --preset):")
    for name, doc in list_sweep_presets().items():
        click.echo(f"  {name:12s} {doc}")
