"""Experiment trackers: TensorBoard, MLflow or Weights & Biases, one tracked run per training run.

``--log tensorboard|mlflow|wandb`` (optional extras of the same names, off by default).
The trainer talks to a :class:`Tracker` at its epoch ends only, from host values it has
already read back (the ``metrics.jsonl`` row), so a training step stays free of host
synchronisation. Per run:

* ``start``: the resolved config as parameters (TensorBoard: a text summary and the
  HParams plugin's run record);
* ``log_epoch``: every number of the epoch's ``metrics.jsonl`` row (``train_loss``,
  ``val_accuracy``, ``val_selectivity``, ...), at step = epoch;
* ``finish``: the final result (``test_accuracy``, ``mean_selectivity``, ...) and the
  per-layer selectivity as ``selectivity/<layer>``, then the tracked run is closed.

Where the records go: TensorBoard writes ``RUN/tensorboard/`` (``tensorboard --logdir
SWEEP/runs`` shows every run); MLflow writes to ``$MLFLOW_TRACKING_URI``, else to
``sqlite:///SWEEP/mlflow.db`` (``RUN/mlflow.db`` for a run outside a sweep), experiment
``$MLFLOW_EXPERIMENT_NAME`` or the sweep directory's name; W&B logs to project
``$WANDB_PROJECT`` (default ``selectivity``), group = the sweep directory's name, its
local files in ``RUN/wandb/`` (``WANDB_MODE=offline`` works offline). A resumed run goes
on in the same tracked run.

A tracker never stops training: a missing package is reported (one line) before the
first epoch, and a tracker that fails later (a server down) says so in one line and is
dropped while the run goes on.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "TRACKERS",
    "Tracker",
    "NullTracker",
    "TensorBoardTracker",
    "MLflowTracker",
    "WandbTracker",
    "SafeTracker",
    "missing_tracker_package",
    "prepare_tracker",
    "open_tracker",
    "result_metrics",
]

#: Tracker name -> (module it imports, the package's optional extra).
TRACKERS: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "mlflow": ("mlflow", "mlflow"),
    "wandb": ("wandb", "wandb"),
}

#: Final numbers of ``result.json`` logged by ``finish`` (when present and finite).
RESULT_KEYS = (
    "test_accuracy",
    "best_val_accuracy",
    "best_epoch",
    "epochs_completed",
    "mean_selectivity",
    "mean_selectivity_live",
    "mean_precision",
    "dead_fraction",
    "train_seconds",
)


class Tracker(Protocol):
    """What the trainer calls, at the start, at each epoch end and at the end of a run."""

    def start(self, name: str, config: dict[str, Any]) -> None: ...

    def log_epoch(self, row: dict[str, Any]) -> None: ...

    def finish(self, result: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class NullTracker:
    """No tracking (the default)."""

    def start(self, name: str, config: dict[str, Any]) -> None:
        pass

    def log_epoch(self, row: dict[str, Any]) -> None:
        pass

    def finish(self, result: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def _number(v: Any) -> float | None:
    """``v`` as a finite float, or None (None, strings, bools, NaN and inf are not logged)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def epoch_metrics(row: dict[str, Any]) -> dict[str, float]:
    """The numbers of a ``metrics.jsonl`` row, without ``epoch`` (the step)."""
    out = {k: _number(v) for k, v in row.items() if k != "epoch"}
    return {k: v for k, v in out.items() if v is not None}


def result_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The final numbers of a result record: :data:`RESULT_KEYS` and ``selectivity/<layer>``."""
    out = {k: _number(result.get(k)) for k in RESULT_KEYS}
    for layer in result.get("layers") or []:
        out[f"selectivity/{layer.get('layer')}"] = _number(layer.get("selectivity"))
    return {k: v for k, v in out.items() if v is not None}


def _param(v: Any) -> str | int | float | bool:
    """A config value as a scalar parameter (lists and None as their JSON text)."""
    return v if isinstance(v, (str, int, float, bool)) else json.dumps(v)


def _sweep_name(run_dir: Path) -> str | None:
    """The sweep directory's name when ``run_dir`` is ``SWEEP/runs/<id>``."""
    return run_dir.parent.parent.name if run_dir.parent.name == "runs" else None


class TensorBoardTracker:
    """Scalars and the HParams record in ``RUN/tensorboard/`` (``torch.utils.tensorboard``)."""

    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = run_dir / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self.config: dict[str, Any] = {}

    def start(self, name: str, config: dict[str, Any]) -> None:
        self.config = {k: _param(v) for k, v in config.items()}
        table = "\n".join(f"| {k} | {v} |" for k, v in self.config.items())
        self.writer.add_text("config", f"| field | value |\n| --- | --- |\n{table}", 0)

    def log_epoch(self, row: dict[str, Any]) -> None:
        step = int(row["epoch"])
        for k, v in epoch_metrics(row).items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def finish(self, result: dict[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        step = int(result.get("epochs_completed") or 0)
        final = result_metrics(result)
        for k, v in final.items():
            self.writer.add_scalar(k, v, step)
        # The HParams plugin's record, in this run's own directory (SummaryWriter.add_hparams
        # would open a sub-run): the config against the final numbers.
        exp, ssi, sei = hparams({**self.config, "status": str(result.get("status"))}, final)
        writer: Any = self.writer.file_writer  # created by SummaryWriter.__init__ (stubs say None)
        for summary in (exp, ssi, sei):
            writer.add_summary(summary, step)

    def close(self) -> None:
        self.writer.close()


class MLflowTracker:
    """One MLflow run per training run, through ``MlflowClient`` (no global active run).

    The run carries the tag ``selectivity.run_dir``: a resumed run finds its unfinished
    MLflow run and goes on in it.
    """

    TAG = "selectivity.run_dir"

    def __init__(self, run_dir: Path):
        from mlflow.tracking import MlflowClient

        sweep = _sweep_name(run_dir)
        self.uri, self.experiment = self.store_of(
            run_dir.parent.parent if sweep is not None else run_dir, sweep
        )
        self.client = MlflowClient(tracking_uri=self.uri)
        self.run_dir = str(run_dir.resolve())
        self.run_id: str | None = None

    @staticmethod
    def store_of(home: Path, sweep: str | None) -> tuple[str, str]:
        """Tracking URI and experiment name: the environment's, else ``home/mlflow.db`` and the sweep's name."""
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home.resolve() / 'mlflow.db'}"
        return uri, os.environ.get("MLFLOW_EXPERIMENT_NAME") or sweep or "selectivity"

    @classmethod
    def prepare(cls, sweep_dir: Path) -> str:
        """Create the sweep's store and experiment once, from the driver (workers then only add
        runs: parallel workers never race to create the database); returns the experiment's id."""
        from mlflow.tracking import MlflowClient

        uri, name = cls.store_of(sweep_dir, sweep_dir.name)
        return cls.experiment_id(MlflowClient(tracking_uri=uri), name)

    @staticmethod
    def experiment_id(client: Any, name: str) -> str:
        exp = client.get_experiment_by_name(name)
        return exp.experiment_id if exp is not None else client.create_experiment(name)

    def start(self, name: str, config: dict[str, Any]) -> None:
        from mlflow.entities import Param

        eid = self.experiment_id(self.client, self.experiment)
        quoted = self.run_dir.replace("'", "\\'")
        old = self.client.search_runs(
            [eid], filter_string=f"tags.`{self.TAG}` = '{quoted}' and attributes.status != 'FINISHED'"
        )
        if old:
            self.run_id = old[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            return
        run = self.client.create_run(eid, run_name=name, tags={self.TAG: self.run_dir})
        self.run_id = run.info.run_id
        params = [Param(k, str(_param(v))) for k, v in config.items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def _log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        assert self.run_id is not None
        ms = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, ms, step) for k, v in values.items()])

    def log_epoch(self, row: dict[str, Any]) -> None:
        self._log(epoch_metrics(row), int(row["epoch"]))

    def finish(self, result: dict[str, Any]) -> None:
        assert self.run_id is not None
        self._log(result_metrics(result), int(result.get("epochs_completed") or 0))
        self.client.set_tag(self.run_id, "status", str(result.get("status")))
        self.client.set_terminated(self.run_id, "FINISHED")
        self.run_id = None

    def close(self) -> None:
        if self.run_id is not None:  # stopped before its end (interrupted, failed): resumable
            self.client.set_terminated(self.run_id, "KILLED")
            self.run_id = None


class WandbTracker:
    """One W&B run per training run (``wandb.init(reinit="create_new")``: fused groups log
    several runs at once), local files in ``RUN/wandb/``. Its id is derived from the run
    directory's path, so a resumed run goes on in the same W&B run."""

    def __init__(self, run_dir: Path):
        import wandb

        self.wandb = wandb
        self.run_dir = run_dir
        self.run: Any = None

    def start(self, name: str, config: dict[str, Any]) -> None:
        run_id = hashlib.sha1(str(self.run_dir.resolve()).encode()).hexdigest()[:16]
        self.run = self.wandb.init(
            project=os.environ.get("WANDB_PROJECT") or "selectivity",
            group=_sweep_name(self.run_dir),
            name=name,
            id=run_id,
            resume="allow",
            config=config,
            dir=str(self.run_dir),
            reinit="create_new",
        )

    def log_epoch(self, row: dict[str, Any]) -> None:
        self.run.log(epoch_metrics(row), step=int(row["epoch"]))

    def finish(self, result: dict[str, Any]) -> None:
        self.run.summary.update({**result_metrics(result), "status": str(result.get("status"))})
        self.run.finish(exit_code=0)
        self.run = None

    def close(self) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1)
            self.run = None


_IMPLEMENTATIONS: dict[str, Callable[[Path], Tracker]] = {
    "tensorboard": TensorBoardTracker,
    "mlflow": MLflowTracker,
    "wandb": WandbTracker,
}


class SafeTracker:
    """A tracker whose failures are reported in one line and never reach the training loop.

    After its first failure the tracker is dropped (every later call does nothing).
    """

    def __init__(self, kind: str, inner: Tracker | None, log: Callable[[str], None]):
        self.kind = kind
        self.inner = inner
        self.log = log

    def _call(self, what: str, fn: Callable[[], None]) -> None:
        if self.inner is None:
            return
        try:
            fn()
        except Exception as e:  # a tracker must never stop training
            msg = " ".join(f"{type(e).__name__}: {e}".split())[:300]
            self.log(f"warning: --log {self.kind} failed at {what} ({msg}); training goes on without it")
            inner, self.inner = self.inner, None
            try:
                inner.close()
            except Exception:
                pass

    def start(self, name: str, config: dict[str, Any]) -> None:
        self._call("start", lambda: self.inner.start(name, config) if self.inner else None)

    def log_epoch(self, row: dict[str, Any]) -> None:
        self._call(f"epoch {row.get('epoch')}", lambda: self.inner.log_epoch(row) if self.inner else None)

    def finish(self, result: dict[str, Any]) -> None:
        self._call("the end of the run", lambda: self.inner.finish(result) if self.inner else None)

    def close(self) -> None:
        self._call("close", lambda: self.inner.close() if self.inner else None)
        self.inner = None

    @property
    def active(self) -> bool:
        return self.inner is not None


def missing_tracker_package(kind: str | None) -> str | None:
    """Why tracker ``kind`` cannot run here (one line naming the extra), or None.

    Raises
    ------
    ValueError
        ``kind`` is not a tracker name.
    """
    if kind is None:
        return None
    if kind not in TRACKERS:
        raise ValueError(f"unknown tracker {kind!r}; choose one of {', '.join(TRACKERS)}")
    module, extra = TRACKERS[kind]
    if importlib.util.find_spec(module) is None:
        return f"--log {kind} needs {module}: pip install 'selectivity[{extra}]'"
    return None


def prepare_tracker(
    kind: str | None, sweep_dir: str | os.PathLike, log: Callable[[str], None] = print
) -> str | None:
    """Check tracker ``kind`` once for a whole sweep, before any run trains; the kind to use, or None.

    A missing package, or an MLflow store that cannot be opened (its database and
    experiment are created here, once), is one warning line and the sweep runs without
    the tracker.

    Raises
    ------
    ValueError
        ``kind`` is not a tracker name.
    """
    missing = missing_tracker_package(kind)
    if missing is not None:
        log(f"warning: {missing}; the sweep runs without it")
        return None
    if kind == "mlflow":
        try:
            MLflowTracker.prepare(Path(sweep_dir))
        except Exception as e:  # a server down, a store that cannot be written
            msg = " ".join(f"{type(e).__name__}: {e}".split())[:300]
            log(f"warning: --log mlflow cannot open its store ({msg}); the sweep runs without it")
            return None
    return kind


def open_tracker(
    kind: str | None,
    run_dir: str | os.PathLike,
    name: str,
    config: dict[str, Any],
    log: Callable[[str], None] = print,
) -> SafeTracker:
    """The started tracker ``kind`` of one run (a do-nothing one for None or on failure).

    Parameters
    ----------
    kind : {"tensorboard", "mlflow", "wandb"} or None
    run_dir : path
        The run directory (where local records go; see the module docstring).
    name : str
        The tracked run's name (the run id).
    config : dict
        The resolved config, logged as parameters.
    log : callable
        Receives the one-line warning of a missing package or a failure.
    """
    if kind is None:
        return SafeTracker("none", None, log)
    missing = missing_tracker_package(kind)
    if missing is not None:
        log(f"warning: {missing}; training without it")
        return SafeTracker(kind, None, log)
    tracker = SafeTracker(kind, NullTracker(), log)

    def make() -> None:  # importing and connecting may fail too: the same one-line warning
        tracker.inner = _IMPLEMENTATIONS[kind](Path(run_dir))

    tracker._call("start", make)
    tracker.start(name, config)
    return tracker
