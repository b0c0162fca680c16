"""``selectivity sweep`` (train a grid), ``results`` (print its database), ``summarize``."""

from __future__ import annotations

import click

from ..run.config import ConfigError, parse_overrides
from .options import DATA_HELP, FuseSize, SweepDir, data_option

__all__ = ["sweep", "results", "summarize"]

#: Columns of the ``results`` table (one row per run, or per layer).
RUN_COLUMNS = [
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
LAYER_COLUMNS = ["run_id", "layer", "units", "selectivity", "dead_fraction", "precision"]
GEOMETRY_COLUMNS = ["run_id", "alpha", "seed", "layer", "perturbation", "measure", "value"]


def _spec(preset, models, alphas, seeds, train_preset, sets, grids, epochs, train_subset):
    """The sweep spec the options describe (a ConfigError when they do not fit)."""
    from ..sweep import SweepSpec, get_sweep_preset, parse_floats, parse_grid, parse_seeds

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
    return spec.validate()


def _dry_run(spec, out, executor: str, workers: int | None) -> None:
    from ..run.files import FINAL_STATUSES, DamagedFileError, SweepFiles, read_json

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


@click.command()
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
@data_option(DATA_HELP)
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
    type=click.IntRange(min=1),
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
    """Train a grid of models x alphas x seeds; resumable (run it again to continue).

    After training, the preset's robustness evaluation and geometry step (if any) and the
    summary table and figures (`selectivity.report.run_experiment` in Python).
    """
    from ..report import run_experiment

    spec = _spec(preset, models, alphas, seeds, train_preset, sets, grids, epochs, train_subset)
    if dry_run:
        _dry_run(spec, out, executor or spec.executor or "inprocess", workers or spec.workers)
        return
    result = run_experiment(
        spec,
        out,
        data=data,
        robustness=not no_robustness,
        geometry=not no_geometry,
        corrupted=corrupted,
        summary=not no_summary,
        executor=executor,
        workers=workers,
        address=address,
        cpus_per_run=cpus_per_run,
        gpus_per_run=gpus_per_run,
        fuse=fuse,
        archive_mismatched=archive_mismatched,
        progress=not quiet,
        log=lambda m: click.echo(m, err=True),
    )
    if result.failed:
        raise click.ClickException(
            f"{result.failed} of {len(result.runs)} runs failed (their messages are above); "
            "rerun the same command to retry them"
        )


def _print_table(df, columns=None, digits: str = ".4f") -> None:
    import pandas as pd

    with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_columns", None):
        shown = df if columns is None else df[columns]
        click.echo(shown.to_string(index=False, float_format=lambda v: f"{v:{digits}}"))


@click.command()
@click.argument("sweep_dir", type=SweepDir())
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
        raise click.UsageError("--robustness and --geometry are different tables: give one")
    store = rebuild_store(sweep_dir) if rebuild else open_store(sweep_dir)
    with store:
        if robustness:
            df = store.robustness_df(robustness)
        elif geometry_rows:
            df = store.geometry_df()
        else:
            df = store.layers_df() if layers else store.runs_df()
    columns = None
    if geometry_rows:
        if fmt == "table" and df.empty:
            click.echo("no geometry results: run `selectivity geometry SWEEP_DIR` first", err=True)
            return
        columns = GEOMETRY_COLUMNS
    elif robustness:
        if robustness == "summary":
            df = df.drop(columns=["settings"])
    elif layers:
        columns = LAYER_COLUMNS
    else:
        df = df.drop(columns=["config"])
        columns = RUN_COLUMNS
    if fmt == "csv":
        click.echo(df.to_csv(index=False), nl=False)
    elif fmt == "json":
        click.echo(df.to_json(orient="records", indent=1))
    else:
        _print_table(df, columns, ".4g" if geometry_rows else ".4f")


@click.command()
@click.argument("sweep_dir", type=SweepDir())
@click.option("--no-figures", is_flag=True, help="Only the table.")
def summarize(sweep_dir, no_figures):
    """Summary table (mean and bootstrapped 95% CI per model and alpha) and figures of a sweep."""
    from ..report import summarize_sweep

    out = summarize_sweep(sweep_dir, log=click.echo, figures=not no_figures)
    for k, v in out.items():
        click.echo(f"wrote {k}: {v}", err=True)
