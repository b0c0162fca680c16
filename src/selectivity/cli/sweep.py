"""``selectivity sweep`` (train a grid), ``results`` (print its database), ``summarize``."""

from __future__ import annotations

import sys

import click

from ..run.config import ConfigError, parse_overrides
from .options import (
    DATA_HELP,
    Command,
    FuseSize,
    PresetName,
    SweepDir,
    data_option,
    log_option,
    quiet_option,
)

__all__ = ["sweep", "results", "summarize"]

#: Columns of the ``results`` table (one row per run, or per layer).
RUN_COLUMNS = [
    "run_id",
    "model",
    "alpha",
    "seed",
    "status",
    "test_accuracy",
    "best_val_accuracy",
    "best_epoch",
    "mean_selectivity",
    "mean_precision",
    "dead_fraction",
    "train_seconds",
]
LAYER_COLUMNS = [
    "run_id",
    "model",
    "alpha",
    "seed",
    "layer",
    "units",
    "selectivity",
    "dead_fraction",
    "precision",
]
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
    type=PresetName("sweep", "sweep preset", "use --train-preset {name}"),
    default=None,
    help="Sweep preset, e.g. quick (CPU, ~15 min) or paper (GPUs/cluster); `selectivity presets` "
    "describes each.",
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
    type=PresetName("training", "training preset", "use --preset {name}"),
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
    type=click.Choice(["inprocess", "process", "ray", "slurm"]),
    default=None,
    help="Where runs execute (default: the preset's, else inprocess); slurm: one SLURM job per run "
    "or fused group, submitted with submitit from a login node (pip install 'selectivity[slurm]').",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Parallel runs for the process executor (default: CPU count), CPUs of a local Ray instance, "
    "or SLURM jobs running at once (default: no limit).",
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
    help="CPUs each run requests (Ray, SLURM) / torch threads per worker.",
)
@click.option(
    "--gpus-per-run",
    type=float,
    default=0,
    show_default=True,
    help="GPUs each run requests (Ray: fractions allowed; SLURM: a whole number).",
)
@click.option("--slurm-partition", default=None, help="SLURM partition of the jobs (--executor slurm).")
@click.option(
    "--slurm-time",
    type=click.IntRange(min=1),
    default=24 * 60,
    show_default=True,
    help="Time limit of each SLURM job in minutes; a job that reaches it is requeued and resumes.",
)
@click.option(
    "--slurm-mem",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Memory of each SLURM job in GB.",
)
@click.option(
    "--slurm-set",
    "slurm_sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Another #SBATCH option of each job (repeatable), e.g. --slurm-set account=lab --slurm-set qos=high.",
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
@log_option()
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
@quiet_option()
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
    slurm_partition,
    slurm_time,
    slurm_mem,
    slurm_sets,
    fuse,
    log,
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
    executor_options = None
    if (executor or spec.executor) == "slurm":
        executor_options = {
            "partition": slurm_partition,
            "time_min": slurm_time,
            "mem_gb": slurm_mem,
            "additional": _key_values(slurm_sets, "--slurm-set"),
        }
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
        tracker=log,
        executor_options=executor_options,
    )
    if result.failed:
        raise click.ClickException(
            f"{result.failed} of {len(result.runs)} runs failed (their messages are above); "
            "rerun the same command to retry them"
        )


def _key_values(items: tuple[str, ...], flag: str) -> dict[str, str]:
    """``("account=lab", "qos=high")`` -> ``{"account": "lab", "qos": "high"}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.UsageError(f"{flag} takes KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _print_table(df, columns=None, digits: str = ".4f") -> None:
    import pandas as pd

    with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_columns", None):
        shown = df if columns is None else df[columns]
        click.echo(shown.to_string(index=False, float_format=lambda v: f"{v:{digits}}"))


@click.command(cls=Command, renamed={"--layers": "--per-layer"})
@click.argument("sweep_dir", type=SweepDir())
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "parquet"]),
    default="table",
    show_default=True,
    help="Output format (csv/json/parquet load straight into pandas; parquet needs "
    "pip install 'selectivity[parquet]'). In Python: selectivity.open_sweep(DIR).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write to this file instead of standard output.",
)
@click.option("--per-layer", "layers", is_flag=True, help="Per-layer rows instead of one row per run.")
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
def results(sweep_dir, fmt, output, layers, rebuild, robustness, geometry_rows):
    """Print a sweep's results (one row per run), from its results database."""
    import importlib.util

    from ..sweep import open_store, rebuild_store

    if robustness and geometry_rows:
        raise click.UsageError("--robustness and --geometry are different tables: give one")
    if fmt == "parquet":
        if importlib.util.find_spec("pyarrow") is None:
            raise click.ClickException("--format parquet needs pyarrow: pip install 'selectivity[parquet]'")
        if output is None and sys.stdout.isatty():
            raise click.UsageError("Parquet is binary: give --output FILE (or redirect the output)")
    store = rebuild_store(sweep_dir) if rebuild else open_store(sweep_dir)
    with store:
        df = store.layers_df() if layers else store.runs_df()
    if robustness:
        from ..evaluate.robustness import robustness_frame

        df = robustness_frame(sweep_dir, robustness)
    elif geometry_rows:
        from ..evaluate.geometry import geometry_frame

        df = geometry_frame(sweep_dir)
    if (robustness or geometry_rows) and df.attrs.get("settings_key") and fmt == "table":
        # csv and json rows carry their settings_key; a table says which settings on stderr
        a = df.attrs
        click.echo(
            f"settings {a['settings_key']} ({a['default_because']}); {a['others']} other settings stored"
            + (f": {a['settings']}" if a.get("settings") and robustness else ""),
            err=True,
        )
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
    if fmt == "parquet":
        import io

        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        _write(buf.getvalue(), output)
    elif fmt == "csv":
        _write(df.to_csv(index=False), output)
    elif fmt == "json":
        _write(df.to_json(orient="records", indent=1) + "\n", output)
    elif output is not None:
        raise click.UsageError("--output takes --format csv, json or parquet")
    else:
        _print_table(df, columns, ".4g" if geometry_rows else ".4f")


def _write(data: str | bytes, output: str | None) -> None:
    """``data`` to the file ``output``, or to standard output."""
    if output is None:
        if isinstance(data, bytes):
            sys.stdout.flush()
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        else:
            click.echo(data, nl=False)
        return
    from pathlib import Path

    Path(output).write_bytes(data if isinstance(data, bytes) else data.encode())


@click.command()
@click.argument("sweep_dir", type=SweepDir())
@click.option("--no-figures", is_flag=True, help="Only the table.")
def summarize(sweep_dir, no_figures):
    """Summary table (mean and bootstrapped 95% CI per model and alpha) and figures of a sweep."""
    from ..report import summarize_sweep

    out = summarize_sweep(sweep_dir, log=click.echo, figures=not no_figures)
    for k, v in out.items():
        click.echo(f"wrote {k}: {v}", err=True)
