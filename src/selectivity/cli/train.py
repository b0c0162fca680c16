"""``selectivity train`` (one run) and ``selectivity measure`` (a checkpoint's selectivity)."""

from __future__ import annotations

import json
import sys

import click

from ..data import DATASETS
from ..run.config import make_config, parse_overrides
from .options import data_option

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
    "--preset", default="paper", show_default=True, help="Named preset (see `selectivity presets`)."
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
                "device": device,
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
    # train_run takes the run lock and checks device, data and checkpoint before it writes.
    result = train_run(
        cfg,
        out,
        data=data,
        progress=not quiet,
        log=(lambda m: None) if quiet else (lambda m: click.echo(m, err=True)),
    )
    click.echo(json.dumps({k: result.get(k) for k in RESULT_KEYS}))
    if result.get("status") == "diverged":
        sys.exit(3)


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
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def measure(checkpoint, data, split, top_n, batch_size, device, as_json):
    """Per-layer selectivity, dead units and precision of a checkpoint or run directory."""
    from ..core.measure import measure_selectivity
    from ..data import BatchLoader, check_data_matches_checkpoint
    from ..run.checkpoint import load_data, load_model_from
    from ..run.config import resolve_device

    dev = resolve_device(device)  # a ValueError when the device is not here
    model, cfg, ckpt = load_model_from(checkpoint, dev)
    splits = load_data(cfg, data)
    check_data_matches_checkpoint(ckpt, splits, name=str(checkpoint))
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
