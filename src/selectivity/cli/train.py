"""``selectivity train`` (one run) and ``selectivity measure`` (a checkpoint's selectivity)."""

from __future__ import annotations

import json
import sys

import click

from ..data import DATASETS
from ..run.config import make_config, parse_overrides
from .options import DEVICE_HELP, PresetName, data_option, device_option, given, log_option, quiet_option

__all__ = ["train", "measure"]

#: What ``train`` prints of its result (one JSON line).
RESULT_KEYS = ("status", "test_accuracy", "best_val_accuracy", "best_epoch", "mean_selectivity", "message")


@click.command()
@click.option("--model", default=None, help="Model name (see `selectivity models`). Default: resnet20.")
@click.option(
    "--alpha", type=float, default=None, help="Regulariser strength: < 0 penalises, > 0 promotes selectivity."
)
@click.option("--seed", type=int, default=None, help="Seed of initialisation, shuffling and augmentation.")
@click.option(
    "--preset",
    type=PresetName("training", "preset", "use `selectivity sweep --preset {name}`"),
    default="paper",
    show_default=True,
    help="Training preset (see `selectivity presets`); without a GPU, cpu-short or smoke take minutes.",
)
@click.option(
    "--dataset",
    type=click.Choice(list(DATASETS)),
    default=None,
    help="Dataset (default cifar10; tiny-imagenet with --model resnet18).",
)
@data_option()
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
@device_option(DEVICE_HELP + " Default: the config's device (auto).")
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override any config field, e.g. --set lr=0.05 (repeatable).",
)
@log_option()
@quiet_option("No progress bars, per-epoch lines or time estimate.")
@click.pass_context
def train(
    ctx, model, alpha, seed, preset, dataset, data, out, epochs, train_subset, device, sets, log, quiet
):
    """Train one model with the selectivity regulariser into a run directory."""
    from ..run.files import RunFiles
    from ..run.health import inspect_run_dir
    from ..training.single import train_run

    values = {
        **parse_overrides(list(sets)),
        **{
            k: v
            for k, v in {
                "alpha": alpha,
                "seed": seed,
                "epochs": epochs,
                "dataset": dataset,
                "train_subset": train_subset,
                "device": device if given(ctx, "device") else None,  # else the config's or --set's
                "model": model,
            }.items()
            if v is not None
        },
    }
    cfg = make_config(preset, values)  # a ConfigError is a usage error (status 2)
    if RunFiles(out).root.is_dir():
        h = inspect_run_dir(out)
        if not h.ok:
            raise click.ClickException(
                f"damaged run directory: {h.describe()}; move the damaged files away (or delete {out}) "
                "to train it again"
            )
    if not quiet and not given(ctx, "preset"):
        _say_what_the_default_preset_costs(cfg, preset)

    # train_run takes the run lock and checks device, data and checkpoint before it writes.
    def echo(msg: str) -> None:  # --quiet keeps the warnings (a tracker that fails)
        if not quiet or msg.startswith("warning:"):
            click.echo(msg, err=True)

    result = train_run(cfg, out, data=data, progress=not quiet, log=echo, tracker=log)
    click.echo(json.dumps({k: result.get(k) for k in RESULT_KEYS}))
    if result.get("status") == "diverged":
        sys.exit(3)


def _say_what_the_default_preset_costs(cfg, preset: str) -> None:
    """Without a GPU and without --preset: the preset used and its training time here, measured."""
    from ..run.config import resolve_device
    from ..training.estimate import estimate_training

    if resolve_device(cfg.device).type != "cpu":
        return
    est = estimate_training(cfg)
    hours = est.seconds / 3600
    took = f"about {hours:.1f} h" if hours >= 1 else f"about {est.seconds / 60:.0f} min"
    click.echo(
        f"no GPU: training with the default preset {preset!r} ({cfg.epochs} epochs of "
        f"{est.steps_per_epoch} steps of {cfg.batch_size} images); one training step took "
        f"{est.step_seconds:.2f} s here (measured), so {cfg.epochs} epochs take {took}. "
        "For minutes, use --preset cpu-short (or smoke); `selectivity presets` lists them.",
        err=True,
    )


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True))
@data_option()
@click.option(
    "--split",
    type=click.Choice(["test", "val"]),
    default="test",
    show_default=True,
    help="Which split to measure.",
)
@click.option(
    "--top-n",
    type=click.IntRange(min=1),
    default=None,
    help="Samples per unit for precision (default: the run's top_n, 1000 in the paper).",
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=1000, show_default=True, help="Evaluation batch size."
)
@click.option(
    "--all-images",
    is_flag=True,
    help="Measure every image of the split (default: the run's own evaluation subset, eval_subset, "
    "which its stored numbers used).",
)
@device_option()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--units",
    "units_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Also write per-unit records to this directory: units.parquet|csv (one row per unit: "
    "layer, unit, SI, precision, preferred class, dead, mean response per class) and "
    "top_samples.parquet|csv (each unit's --top-k most-activating samples, as positions among the "
    "measured images: the run's evaluation subset unless --all-images).",
)
@click.option(
    "--top-k",
    type=click.IntRange(min=1),
    default=9,
    show_default=True,
    help="Most-activating samples kept per unit with --units (streamed: memory O(units x k)).",
)
@click.option(
    "--format",
    "record_format",
    type=click.Choice(["auto", "parquet", "csv"]),
    default="auto",
    show_default=True,
    help="Format of the --units records (auto: Parquet when pyarrow is installed, else CSV).",
)
@quiet_option("No progress bar.")
def measure(
    checkpoint,
    data,
    split,
    top_n,
    batch_size,
    all_images,
    device,
    as_json,
    units_dir,
    top_k,
    record_format,
    quiet,
):
    """Per-layer selectivity, dead units and precision of a checkpoint or run directory.

    By default on the images the run itself was evaluated on (its eval_subset of the
    split), so the numbers compare with the run's result.json; --all-images for the
    whole split.
    """
    from ..core.measure import measure_selectivity
    from ..data import BatchLoader, check_data_matches_checkpoint
    from ..run.checkpoint import load_data, load_model_from
    from ..run.config import resolve_device
    from ..training.single import subset

    dev = resolve_device(device)  # a ValueError when the device is not here
    model, cfg, ckpt = load_model_from(checkpoint, dev)
    splits = load_data(cfg, data)
    check_data_matches_checkpoint(ckpt, splits, name=str(checkpoint))
    whole = splits.test if split == "test" else splits.val
    ds = whole if all_images else subset(whole, cfg.eval_subset, cfg.split_seed)
    if len(ds) == len(whole):
        which = "all" if all_images or cfg.eval_subset is None else "eval_subset"
        images = f"all {len(whole)} images of the {split} split"
    else:
        which = "eval_subset"
        images = (
            f"the run's evaluation subset: {len(ds)} of {len(whole)} {split} images "
            f"(class-stratified, split seed {cfg.split_seed}; --all-images for every image)"
        )
    loader = BatchLoader(ds, batch_size, mean=splits.mean, std=splits.std, device=dev)
    rep = measure_selectivity(
        model,
        loader,
        splits.num_classes,
        layers=cfg.selectivity_layers or None,
        top_n=top_n or cfg.top_n,
        negative=cfg.negative_rule,
        device=dev,
        progress=not (as_json or quiet),
        pooling=cfg.token_pooling,
        top_k=top_k if units_dir else None,
    )
    if units_dir:
        from ..evaluate.units import write_unit_records

        for path in write_unit_records(rep, units_dir, class_names=ds.classes, fmt=record_format).values():
            click.echo(f"wrote {path}", err=as_json)
    d = rep.to_dict()
    d.update(checkpoint=str(checkpoint), split=split, images=which, model=cfg.model, alpha=cfg.alpha)
    if as_json:
        from ..run.files import clean_json

        click.echo(json.dumps(clean_json(d), indent=2))
        return
    click.echo(f"measured on {images}")
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
