"""Train R runs of one architecture as one model: stacked parameters under ``torch.func.vmap``.

A fused group holds the parameters and buffers of R models of the same class stacked
along a new leading dimension (:func:`torch.func.stack_module_state`) and runs the
model once per step with :func:`torch.func.vmap` over
:func:`torch.func.functional_call`. Every run keeps its own minibatch (inputs
``(R, B, C, H, W)``, labels ``(R, B)``), its own batch-norm statistics, its own
regulariser strength ``alpha`` and its own optimiser state (SGD momentum or AdamW
moments), so a run in a group follows
the same arithmetic as the run trained alone (the tests check this to 1e-9 in float64).

Three backends compute the R forward passes (:func:`pick_backend`); all follow the
arithmetic of separate runs and differ only in speed:

- ``grouped``: one wide model (:func:`selectivity.models.grouped.group_model`) whose
  convolutions are grouped convolutions over the R runs and whose batch norms run over
  ``R * C`` channels; the stacked parameters are viewed in the wide shapes at no cost.
  One kernel per layer for R small networks is what fills a GPU.
- ``loop``: the single-run model called once per run on views of the stacked
  parameters, forward and backward one run at a time, then one optimizer step over the
  stacks. On a CPU a single convolution already keeps the cores busy and a grouped one
  is slower than R plain ones, so this is the CPU default: it costs R single steps.
- ``vmap``: :func:`torch.func.vmap` over :func:`torch.func.functional_call`, for any
  model the grouped form cannot widen (batch norm under ``vmap`` is slow on CPU).

Each backend is one small class behind one interface (``bind`` to the stacks after
construction and after a drop, ``forward``, ``backward`` for one step's schedule,
``modules`` for train/eval); :class:`FusedRuns` keeps the stacks, the optimizer, the
selectivity arithmetic and the public API.

Batch-norm running statistics are stacked buffers; every backend updates each run's
slice in place (checked by the tests against separate runs).

Assumptions of a group: same model class and shapes, same learning-rate schedule,
momentum and weight decay (SGD's and AdamW's updates are elementwise, so one optimizer
over the stacked leaves equals R optimizers as long as these hyperparameters are shared), same
batch size and number of steps per epoch. Seeds, alphas and data orders differ freely.

Nothing in a step reads a value back from the device; divergence is checked by the
caller every K steps with :meth:`FusedRuns.nonfinite_runs`, and a diverged run is
removed with :meth:`FusedRuns.drop` (the stack is rebuilt; the other runs go on with
unchanged values).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from ..core.hooks import LayerSpec, PerLayer, Site, attach_site_hooks, never_ran_error, resolve_sites
from ..core.regularizer import DEAD_RULES, layer_ids, masked_selectivity
from ..models.grouped import group_model, groupable, wide_shape
from .robust import RobustTraining
from .runtime import autocast, compile_with_fallback

__all__ = [
    "BACKENDS",
    "FusedRuns",
    "FusedStep",
    "pick_backend",
]

#: How a group computes its R forward passes (see :func:`pick_backend`).
BACKENDS: tuple[str, ...] = ("auto", "grouped", "loop", "vmap")


def pick_backend(backend: str, model: nn.Module, device: torch.device | str, robust: bool = False) -> str:
    """The backend a group uses: ``backend`` itself, or for ``"auto"`` the fastest that applies.

    - ``"grouped"``: one wide model (:func:`selectivity.models.grouped.group_model`), each
      convolution one grouped kernel over the R runs. Fastest on a GPU, where one kernel
      for R small networks fills the device; needs every module to be supported.
    - ``"loop"``: the single-run model called R times per step on views of the stacked
      parameters, then one optimizer step over the stacks. On a CPU, where a
      convolution already uses the cores fully, this costs R single steps and no more
      (grouped convolutions are slower there than R plain ones).
    - ``"vmap"``: :func:`torch.func.vmap` over :func:`torch.func.functional_call`; any
      model, no conversion (batch norm under ``vmap`` is slow on CPU).

    ``"auto"`` picks ``"loop"`` on the CPU, else ``"grouped"`` when the model can be
    widened, else ``"loop"`` (e.g. a ViT: ``"grouped"`` refuses its modules).

    With ``robust`` (a robust-training method: every run attacks or augments its own
    batch through its own module) only ``"loop"`` applies, and ``"auto"`` picks it.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown fused backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if robust:
        if backend not in ("auto", "loop"):
            raise ValueError(
                f"backend {backend!r} cannot train with robust training (each run attacks or augments "
                "its own batch through its own module); use 'loop' or 'auto'"
            )
        return "loop"
    if backend != "auto":
        if backend == "grouped" and not groupable(model):
            raise ValueError(
                f"backend 'grouped' cannot widen a {type(model).__name__} (see group_model); use 'loop' or 'vmap'"
            )
        return backend
    if torch.device(device).type == "cpu":
        return "loop"
    # A model the grouped form cannot widen (a transformer: LayerNorm, attention) runs
    # as R plain models: every module works, and vmap's coverage of it is not assumed.
    return "grouped" if groupable(model) else "loop"


@dataclass
class FusedStep:
    """Per-run results of one fused step (detached, on the group's device; no sync).

    Attributes
    ----------
    loss, ce, selectivity : torch.Tensor
        ``(R,)`` total loss ``ce - alpha * selectivity``, cross-entropy, minibatch SI.
    correct : torch.Tensor
        ``(R,)`` int64 correct predictions in the minibatch.
    """

    loss: torch.Tensor
    ce: torch.Tensor
    selectivity: torch.Tensor
    correct: torch.Tensor


#: Optimisers a group can run (elementwise updates, so one over the stacks equals R).
OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw")


def _run_slice(v: torch.Tensor, i: int) -> torch.Tensor:
    """Run ``i``'s part of a stacked optimiser state tensor; a 0-dim one is shared."""
    return v[i].clone() if v.dim() > 0 else v.clone()


# --------------------------------------------------------------------------- fused group
class _Sink:
    """Receives the selectivity sites' tensors from hooks, reduced to ``(B, units)``.

    The one reduction rule (:mod:`selectivity.core.responses`), as in the regulariser's
    capture, with the group's token pooling.
    """

    def __init__(self, pooling: str = "mean") -> None:
        self.acts: list[torch.Tensor] = []
        self.pooling = pooling

    def record(self, site: Site, t: torch.Tensor) -> None:
        self.acts.append(site.reduce(t, self.pooling))


def _float32(a: torch.Tensor) -> torch.Tensor:
    """Half-precision site responses (autocast) as float32; selectivity means stay float32."""
    return a.float() if a.dtype in (torch.float16, torch.bfloat16) else a


# --------------------------------------------------------------------------- backends
LossFn = Callable[..., Any]


class _Backend:
    """How a group computes its R forward passes over the stacked leaves.

    A backend owns the modules that run (the meta template under ``vmap``, the wide
    model, or the R loop modules) and the schedule of one step's forward and backward;
    the stacks, the optimizer and the selectivity arithmetic stay with :class:`FusedRuns`.

    Parameters
    ----------
    base : nn.Module
        The single-run model on the meta device, its selectivity sites hooked to ``sink``;
        its ``training`` flag is the group's mode.
    template : nn.Module
        The single-run model on the CPU (real storage), copied by backends that need one.
    sites : sequence of Site
        The selectivity sites (:func:`selectivity.core.hooks.resolve_sites`).
    sink : _Sink
        Where the site hooks put the sites' responses.
    """

    name: ClassVar[str] = ""
    #: The stacked gradients stay allocated between steps (zeroed in place, never set to
    #: None), because the backend's modules hold slices of them.
    keeps_grads: ClassVar[bool] = False

    def __init__(self, base: nn.Module, template: nn.Module, sites: Sequence[Site], sink: _Sink) -> None:
        self.base, self.template, self.sites, self.sink = base, template, list(sites), sink

    def bind(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], runs: int) -> None:
        """(Re)build for the current stacks of ``runs`` runs: after construction and after a drop."""

    def modules(self) -> tuple[nn.Module, ...]:
        """Every module whose train/eval mode follows the group's."""
        return (self.base,)

    def forward(
        self,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        x: torch.Tensor,
        run: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(R, B, K)`` and site responses ``(R, B, U)`` for inputs ``(R, B, ...)``.

        With ``run`` (backends that step one run at a time), ``x`` is that run's ``(1, B, ...)``.
        """
        raise NotImplementedError

    def backward(
        self,
        losses: LossFn,
        x: torch.Tensor,
        y: torch.Tensor,
        alphas: torch.Tensor,
        amp: Callable[[], AbstractContextManager[Any]],
    ) -> tuple[torch.Tensor, ...]:
        """Forward (under ``amp()``) and backward of one step: per-run ``(loss, ce, si, correct)``.

        ``losses(x, y, alphas, run)`` returns the summed loss then the four per-run values;
        this default runs every run at once.
        """
        with amp():
            total, *per_run = losses(x, y, alphas, None)
        total.backward()
        return tuple(per_run)

    def grads_reset(self, params: dict[str, torch.Tensor]) -> None:
        """The stacks' gradients were set to None (a snapshot was restored)."""

    def run_module(self, run: int) -> nn.Module:
        """Run ``run``'s own module (robust training attacks it); backends that step one run at a time."""
        raise ValueError(f"the {self.name!r} backend has no module per run")


class _VmapBackend(_Backend):
    """:func:`torch.func.vmap` over :func:`torch.func.functional_call` of the meta template."""

    name = "vmap"

    def _one(self, p: dict, b: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One run's forward (vmapped): logits (B, K) and site responses (B, U)."""
        out = functional_call(self.base, (p, b), (x,))
        acts = self.sink.acts
        r = torch.cat([_float32(a) for a in acts], dim=1)
        acts.clear()  # emptied inside the traced region, so torch.compile keeps no batched tensor
        return out, r

    def forward(
        self,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        x: torch.Tensor,
        run: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return vmap(self._one, in_dims=(0, 0, 0))(params, buffers, x)


class _GroupedBackend(_Backend):
    """One wide model: every run's channels side by side, grouped convolutions."""

    name = "grouped"

    def __init__(self, base: nn.Module, template: nn.Module, sites: Sequence[Site], sink: _Sink) -> None:
        super().__init__(base, template, sites, sink)
        self.wide: nn.Module | None = None

    def bind(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], runs: int) -> None:
        wide = group_model(self.base, runs)
        attach_site_hooks(wide, self.sites, self.sink.record)  # live as long as the wide model
        wide.train(self.base.training)
        self.wide = wide

    def modules(self) -> tuple[nn.Module, ...]:
        return (self.base,) if self.wide is None else (self.base, self.wide)

    def forward(
        self,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        x: torch.Tensor,
        run: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.wide is not None
        nr, b = x.shape[:2]
        xw = x.transpose(0, 1).reshape(b, nr * x.shape[2], *x.shape[3:])  # (R, B, C, ...) -> (B, R*C, ...)
        tensors: dict[str, torch.Tensor] = {}
        for k, v in params.items():
            tensors[k] = v.view(wide_shape(v.shape[1:], nr))  # (R, *s) -> (R*s0, *s[1:]), no copy
        counters = []
        for k, v in buffers.items():
            if v.dim() == 1:  # num_batches_tracked: (R,) -> one counter, copied to all runs below
                tensors[k] = v[0]
                counters.append(v)
            else:
                tensors[k] = v.view(wide_shape(v.shape[1:], nr))  # in-place BN updates reach the stacks
        out = functional_call(self.wide, tensors, (xw,))  # (B, R*K)
        if self.wide.training:
            for v in counters:
                if nr > 1:
                    v[1:].copy_(v[0].expand(nr - 1))
        acts = self.sink.acts
        # each (B, R*U_l) -> (B, R, U_l); sites side by side -> (B, R, U) -> (R, B, U)
        r = torch.cat(
            [_float32(a).view(b, nr, -1) for a in acts],
            dim=2,
        ).transpose(0, 1)
        acts.clear()
        return out.view(b, nr, -1).transpose(0, 1), r  # (B, R*K) -> (R, B, K)


class _LoopBackend(_Backend):
    """The single-run model once per run, on modules whose leaves are views of the stacks."""

    name = "loop"
    keeps_grads = True

    def __init__(self, base: nn.Module, template: nn.Module, sites: Sequence[Site], sink: _Sink) -> None:
        super().__init__(base, template, sites, sink)
        self.runs: list[nn.Module] = []

    def bind(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], runs: int) -> None:
        """Build the R modules on the stacks' storage, and their gradients.

        Run ``i``'s module has real ``nn.Parameter`` leaves that are views of slice ``i``
        of the stacked leaves, and buffers that are views of the stacked buffers. So a
        forward is the plain single-run module (no ``functional_call``, no ``select`` in
        the graph), batch norm updates the stacks in place, and the optimizer's in-place
        update of the stacks is what every run's module sees.
        """
        modules: list[nn.Module] = []
        for i in range(runs):
            m = copy.deepcopy(self.template)
            subs = dict(m.named_modules())
            for k, v in params.items():
                owner, _, attr = k.rpartition(".")
                setattr(subs[owner], attr, nn.Parameter(v.detach()[i], requires_grad=v.requires_grad))
            for k, v in buffers.items():
                owner, _, attr = k.rpartition(".")
                subs[owner]._buffers[attr] = v[i]
            attach_site_hooks(m, self.sites, self.sink.record)
            m.train(self.base.training)
            modules.append(m)
        self.runs = modules
        self.grads_reset(params)

    def grads_reset(self, params: dict[str, torch.Tensor]) -> None:
        """Every stacked leaf gets a zero gradient whose slices are its runs' gradients.

        Backward then accumulates each run's gradient in place into its slice (a
        defined ``.grad`` is added to, not replaced), which is the stacked gradient the
        optimizer reads.
        """
        for v in params.values():
            if v.grad is None:
                v.grad = torch.zeros_like(v)
        for i, m in enumerate(self.runs):
            for k, p in m.named_parameters():
                p.grad = params[k].grad[i]  # type: ignore[index]  # allocated just above

    def modules(self) -> tuple[nn.Module, ...]:
        return (self.base, *self.runs)

    def run_module(self, run: int) -> nn.Module:
        return self.runs[run]

    def forward(
        self,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        x: torch.Tensor,
        run: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run ``positions[j]``'s own module on ``x[j]``: modules that share the stacks' storage."""
        positions = range(x.shape[0]) if run is None else (run,)
        outs, resps = [], []
        acts = self.sink.acts
        for j, i in enumerate(positions):
            acts.clear()
            outs.append(self.runs[i](x[j]))
            resps.append(torch.cat([_float32(a) for a in acts], dim=1))
        acts.clear()
        return torch.stack(outs), torch.stack(resps)  # (R', B, K), (R', B, U)

    def backward(
        self,
        losses: LossFn,
        x: torch.Tensor,
        y: torch.Tensor,
        alphas: torch.Tensor,
        amp: Callable[[], AbstractContextManager[Any]],
    ) -> tuple[torch.Tensor, ...]:
        # Forward and backward one run at a time: the activations of one run only are
        # alive at once, as in a single run (R runs' would not stay in the CPU caches).
        parts = []
        for i in range(x.shape[0]):
            with amp():
                total, *per_run = losses(x[i : i + 1], y[i : i + 1], alphas[i : i + 1], i)
            total.backward()
            parts.append(per_run)
        return tuple(torch.cat(t) for t in zip(*parts))


_BACKEND_CLASSES: dict[str, type[_Backend]] = {
    b.name: b for b in (_GroupedBackend, _LoopBackend, _VmapBackend)
}


class FusedRuns:
    """R runs of one architecture trained together as one stacked model.

    Parameters
    ----------
    models : sequence of nn.Module
        R initialised models of the same class and shapes (e.g. built with different
        seeds, or loaded from R checkpoints to resume). They are copied; the originals
        are not changed.
    alphas : sequence of float
        Regulariser strength of each run (``loss = CE - alpha * SI``).
    num_classes : int
        Number of classes.
    lr, momentum, weight_decay : float
        Optimiser hyperparameters shared by the group (``lr`` changes with :meth:`set_lr`;
        ``momentum`` is SGD's only).
    layers : LayerSpec, optional
        Selectivity sites, as for :class:`~selectivity.core.regularizer.SelectivityRegularizer`.
    layouts, sites, pooling
        Per-layer layout, site kind and token pooling, as for the regulariser (the
        one reduction rule of :mod:`selectivity.core.responses`).
    eps, negative, dead
        Regulariser options (see :mod:`selectivity.core.regularizer`).
    run_ids : sequence, optional
        A name per run (default ``0..R-1``); kept in step with :meth:`drop`.
    amp : bool
        bf16 autocast for the forward pass (CPU or CUDA).
    optimizer_states : sequence of dict, optional
        Per-run ``optimizer.state_dict()`` of single runs (resume from checkpoints).
    backend : {"auto", "grouped", "loop", "vmap"}
        How the R forward passes are computed (:func:`pick_backend`). Every backend
        gives the same arithmetic as separate runs; they differ only in speed.
    optimizer : {"sgd", "adamw"}
        The optimiser of every run (SGD with momentum, or AdamW with decoupled decay).
    robust : sequence of RobustTraining or None, optional
        Each run's robust-training method (:mod:`selectivity.training.robust`), all of one
        method; the ``loop`` backend only. Its draws depend on each step's ``key``.

    Examples
    --------
    >>> group = FusedRuns(models, alphas=[-1.0, 0.0, 2.0], num_classes=10, lr=0.1)  # doctest: +SKIP
    >>> for x, y in group_loader:  # x (R, B, C, H, W), y (R, B)
    ...     out = group.step(x, y)
    >>> torch.save({"model": group.state_dict(0)}, "run0.pt")  # doctest: +SKIP
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        alphas: Sequence[float],
        num_classes: int,
        *,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        layers: LayerSpec = None,
        layouts: PerLayer = None,
        sites: PerLayer = None,
        pooling: str = "mean",
        eps: float = 1e-6,
        negative: str = "shift",
        dead: str = "exclude",
        run_ids: Sequence[Any] | None = None,
        amp: bool = False,
        optimizer_states: Sequence[dict] | None = None,
        backend: str = "auto",
        optimizer: str = "sgd",
        robust: Sequence[RobustTraining | None] | None = None,
    ) -> None:
        models = list(models)
        if not models:
            raise ValueError("models is empty: a fused group needs at least one run")
        if len(alphas) != len(models):
            raise ValueError(f"need one alpha per model: {len(models)} models, {len(alphas)} alphas")
        if dead not in DEAD_RULES:
            raise ValueError(f"dead must be one of {DEAD_RULES}, got {dead!r}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        self.optimizer = optimizer
        first = models[0]
        shapes = {k: (tuple(v.shape), v.dtype) for k, v in first.state_dict().items()}
        for i, m in enumerate(models[1:], start=1):
            if type(m) is not type(first):
                raise ValueError(
                    f"all models of a group must share a class: model 0 is {type(first).__name__}, "
                    f"model {i} is {type(m).__name__}"
                )
            other = {k: (tuple(v.shape), v.dtype) for k, v in m.state_dict().items()}
            if other != shapes:
                raise ValueError(f"model {i} has other parameter names, shapes or dtypes than model 0")
        self.num_classes = int(num_classes)
        self.eps, self.negative, self.dead = float(eps), negative, dead
        self.amp = bool(amp)
        self.run_ids = list(run_ids) if run_ids is not None else list(range(len(models)))
        if len(self.run_ids) != len(models):
            raise ValueError(f"need one run id per model, got {len(self.run_ids)} for {len(models)}")
        self._keys = list(shapes)  # state_dict order of a single model
        self._template = copy.deepcopy(first).cpu()  # materialises single models on request
        # The module whose code runs under vmap: parameters come from the stacks.
        self._base = copy.deepcopy(first).to("meta")
        self.sites = resolve_sites(self._base, layers, layouts, sites)
        self.layer_names = [s.name for s in self.sites]
        self.pooling = pooling
        self._sink = _Sink(pooling)
        attach_site_hooks(self._base, self.sites, self._sink.record)  # lives as long as the copy
        params, buffers = stack_module_state(models)  # name -> (R, ...) leaves, detached copies
        self.params: dict[str, torch.Tensor] = dict(params)
        self.buffers: dict[str, torch.Tensor] = dict(buffers)
        self.device = next(iter(self.params.values())).device
        self.robust: list[RobustTraining | None] = (
            list(robust) if robust is not None else [None] * len(models)
        )
        if len(self.robust) != len(models):
            raise ValueError(f"need one robust method (or None) per model, got {len(self.robust)}")
        self._key = (0, 0)  # (epoch, step) of the step under way: what robust training draws from
        impl = _BACKEND_CLASSES[pick_backend(backend, first, self.device, robust=any(self.robust))]
        self._impl: _Backend = impl(self._base, self._template, self.sites, self._sink)
        self.alphas = torch.tensor(
            [float(a) for a in alphas], dtype=next(iter(self.params.values())).dtype, device=self.device
        )
        self._alphas_list = [float(a) for a in alphas]
        self._momentum_wd = (float(momentum), float(weight_decay))
        self.opt = self._make_optimizer(float(lr))
        if optimizer_states is not None:
            self._load_states(optimizer_states)
        self._loss_fn: LossFn = self._losses
        self._impl.bind(self.params, self.buffers, self.num_runs)
        self._ids: torch.Tensor | None = None
        self.compile_error: str | None = None

    # ------------------------------------------------------------------ properties
    @property
    def backend(self) -> str:
        """The backend in use: ``"grouped"``, ``"loop"`` or ``"vmap"`` (:func:`pick_backend`)."""
        return self._impl.name

    @property
    def num_runs(self) -> int:
        """R, the number of runs in the group now."""
        return len(self.run_ids)

    def set_lr(self, lr: float) -> None:
        """Learning rate of the next steps (shared by every run of the group)."""
        for g in self.opt.param_groups:
            g["lr"] = float(lr)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(R, B, K)`` and site responses ``(R, B, U)`` for inputs ``(R, B, C, H, W)``.

        Uses the group's current mode (:meth:`train` or :meth:`eval`): in train mode
        batch-norm running statistics are updated per run.
        """
        if x.dim() < 2 or x.shape[0] != self.num_runs:
            raise ValueError(f"inputs must be (R={self.num_runs}, B, ...), got {tuple(x.shape)}")
        self._sink.acts.clear()
        return self._impl.forward(self.params, self.buffers, x)

    def train(self) -> FusedRuns:
        for m in self._impl.modules():
            m.train()
        return self

    def eval(self) -> FusedRuns:
        for m in self._impl.modules():
            m.eval()
        return self

    def _losses(
        self, x: torch.Tensor, y: torch.Tensor, alphas: torch.Tensor, run: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(total, per-run loss (R,), ce (R,), si (R,), correct (R,)) of one minibatch per run.

        With ``run`` (a backend that steps one run at a time), ``x``, ``y``, ``alphas`` hold
        that one run only (R = 1); a robust-training run then trains on its method's inputs
        and loss (drawn for the step's ``(epoch, step)``), and its regulariser sees that
        forward pass.
        """
        robust = self.robust[run] if run is not None else None
        y_si = y  # labels of the forward pass the regulariser sees
        if robust is not None:
            assert run is not None  # robust training steps one run at a time
            module = self._impl.run_module(run)
            xr, yr = robust.inputs(module, x[0], y[0], *self._key)  # (V*B, ...), (V*B,)
            x, y_si = xr.unsqueeze(0), yr.unsqueeze(0)
        self._sink.acts.clear()
        logits, r = self._impl.forward(self.params, self.buffers, x, run)  # (R, B, K), (R, B, U)
        nr, b = y.shape
        if robust is not None:
            base, ce1, clean = robust.loss(logits[0], y[0])
            ce, base = ce1.view(1), base.view(1)
            logits = clean.unsqueeze(0)  # (1, B, K): accuracy on the clean views
        else:
            ce = F.cross_entropy(logits.reshape(nr * b, -1), y.reshape(-1), reduction="none")
            ce = ce.view(nr, b).mean(dim=1)  # (R,)
            base = ce
        if self._needs_si:
            assert self._ids is not None
            si, _ = masked_selectivity(
                r,
                y_si,
                self._ids,
                len(self._sizes),
                self.num_classes,
                self.eps,
                self.negative,
                self.dead,
            )  # (R,)
            loss = base - alphas.to(ce.dtype) * si.to(ce.dtype)
        else:
            si = torch.zeros_like(ce)
            loss = base
        correct = (logits.detach().argmax(dim=-1) == y).sum(dim=1)
        return loss.sum(), loss.detach(), ce.detach(), si.detach(), correct

    @property
    def _needs_si(self) -> bool:
        return any(a != 0.0 for a in self._alphas_list)

    def _prepare(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if y.dim() != 2 or y.shape[0] != self.num_runs or x.shape[:2] != y.shape:
            raise ValueError(
                f"inputs must be (R, B, ...) and labels (R, B) with R={self.num_runs}, "
                f"got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        if self._ids is None or self._ids.device != x.device:
            # Site sizes from one eager forward on the meta template (no data, no compute).
            self._sink.acts.clear()
            ran: set[str] = set()
            handles = attach_site_hooks(self._base, self.sites, lambda site, _t: ran.add(site.name))
            try:
                with torch.no_grad():
                    self._base(torch.empty(x.shape[1:], device="meta", dtype=x.dtype))
            finally:
                for h in handles:
                    h.remove()
            missing = [n for n in self.layer_names if n not in ran]
            if missing:
                raise never_ran_error(missing)
            self._sizes = [a.shape[1] for a in self._sink.acts]
            self._sink.acts.clear()
            self._ids = layer_ids(self._sizes, self.device)

    def step(self, x: torch.Tensor, y: torch.Tensor, key: tuple[int, int] = (0, 0)) -> FusedStep:
        """One SGD step of every run on its own minibatch; nothing is read back to the host.

        Parameters
        ----------
        x : torch.Tensor
            ``(R, B, C, H, W)`` inputs, run ``r``'s minibatch in ``x[r]``.
        y : torch.Tensor
            ``(R, B)`` int64 labels, already checked to lie in ``[0, num_classes)``.
        key : (int, int)
            ``(epoch, step)`` of this step: what robust training's draws depend on (with
            each run's seed), as in :func:`selectivity.training.single.train_step`.
        """
        self._key = (int(key[0]), int(key[1]))
        self._prepare(x, y)
        self.train()
        self.opt.zero_grad(set_to_none=not self._impl.keeps_grads)
        loss, ce, si, correct = self._impl.backward(
            self._loss_fn, x, y, self.alphas, lambda: autocast(self.device, self.amp)
        )
        self.opt.step()
        return FusedStep(loss, ce, si, correct)

    # ------------------------------------------------------------------ compile
    def enable_compile(self, x: torch.Tensor, y: torch.Tensor, **compile_kwargs: Any) -> bool:
        """Compile the forward + loss with ``torch.compile``; fall back to eager on failure.

        One trial step on ``(x, y)`` is run and undone (parameters, buffers, momentum are
        restored), so the group's state is unchanged either way. The reason of a failure
        is kept in :attr:`compile_error`.

        Returns
        -------
        bool
            True if the compiled function is used from now on.
        """
        self._prepare(x, y)
        if any(self.robust):
            self.compile_error = "torch.compile is not used for robust training in a fused group"
            return False
        compiled, err = compile_with_fallback(
            self._losses,
            trial=lambda fn: self._trial(fn, x, y),
            snapshot=self._snapshot,
            restore=self._restore,
            **compile_kwargs,
        )
        self._loss_fn, self.compile_error = compiled, err
        return err is None

    def _trial(self, fn: LossFn, x: torch.Tensor, y: torch.Tensor) -> None:
        saved, self._loss_fn = self._loss_fn, fn
        try:
            self.step(x, y)
        finally:
            self._loss_fn = saved

    def _snapshot(self) -> dict:
        return {
            "params": {k: v.detach().clone() for k, v in self.params.items()},
            "buffers": {k: v.clone() for k, v in self.buffers.items()},
            "opt": [self._opt_state(p) for p in self.params.values()],
        }

    def _restore(self, saved: dict) -> None:
        with torch.no_grad():
            for k, v in self.params.items():
                v.copy_(saved["params"][k])
                v.grad = None
            for k, v in self.buffers.items():
                v.copy_(saved["buffers"][k])
        for p, st in zip(self.params.values(), saved["opt"]):
            if st is None:
                self.opt.state.pop(p, None)
            else:
                self.opt.state[p] = st
        self._impl.grads_reset(self.params)

    def _make_optimizer(self, lr: float) -> torch.optim.Optimizer:
        momentum, wd = self._momentum_wd
        params = list(self.params.values())
        if self.optimizer == "adamw":
            # Elementwise update and per-element moments: one AdamW over the stacks equals
            # R AdamWs; its step counter (0-dim) is shared, the runs step together.
            return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=wd)

    def _opt_state(self, p: torch.Tensor) -> dict | None:
        """A copy of the optimiser's state of stacked leaf ``p`` (None before the first step)."""
        st = self.opt.state.get(p)
        if not st:
            return None
        return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in st.items()}

    # ------------------------------------------------------------------ one run's state
    def _index(self, run: int) -> int:
        if not -self.num_runs <= run < self.num_runs:
            raise IndexError(f"run position {run} out of range for a group of {self.num_runs}")
        return run % self.num_runs

    def state_dict(self, run: int) -> OrderedDict[str, torch.Tensor]:
        """Run ``run``'s (position) state, same keys and format as ``model.state_dict()``."""
        i = self._index(run)
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for k in self._keys:
            src = self.params[k] if k in self.params else self.buffers[k]
            out[k] = src.detach()[i].clone()
        return out

    def optimizer_state_dict(self, run: int) -> dict:
        """Run ``run``'s optimiser state in the format of ``Opt(model.parameters()).state_dict()``.

        Per-element state (momentum, moments) is sliced; 0-dim state (AdamW's step) is shared.
        """
        i = self._index(run)
        full = self.opt.state_dict()
        state = {
            j: {k: (_run_slice(v, i) if isinstance(v, torch.Tensor) else v) for k, v in s.items()}
            for j, s in full["state"].items()
        }
        return {"state": state, "param_groups": copy.deepcopy(full["param_groups"])}

    def model(self, run: int) -> nn.Module:
        """A stand-alone copy of run ``run`` (for evaluation, measurement, checkpoints)."""
        m = copy.deepcopy(self._template)
        m.load_state_dict(self.state_dict(run))
        return m.to(self.device)

    def _load_states(self, states: Sequence[dict]) -> None:
        """Stack R single runs' optimiser states (momentum, AdamW moments) onto the leaves."""
        if len(states) != self.num_runs:
            raise ValueError(f"need one optimizer state per run, got {len(states)} for {self.num_runs}")
        for j, p in enumerate(self.params.values()):
            per_run = [s.get("state", {}).get(j, {}) for s in states]
            if all(not st for st in per_run):
                continue
            keys = set(per_run[0])
            if any(set(st) != keys for st in per_run):
                raise ValueError(
                    f"optimizer states disagree: the state of parameter {j} differs between runs"
                )
            for k in keys:
                vals = [st[k] for st in per_run]
                if k == "momentum_buffer" and all(v is None for v in vals):
                    continue
                if any(v is None for v in vals):
                    raise ValueError(f"optimizer states disagree: {k} of parameter {j} missing in some runs")
                if isinstance(vals[0], torch.Tensor) and vals[0].dim() > 0:
                    self.opt.state[p][k] = torch.stack([v.to(p) for v in vals])
                else:  # a 0-dim counter (AdamW's step): the runs step together
                    self.opt.state[p][k] = vals[0].clone() if isinstance(vals[0], torch.Tensor) else vals[0]

    # ------------------------------------------------------------------ divergence
    @staticmethod
    def nonfinite_runs(values: torch.Tensor) -> list[int]:
        """Positions whose accumulated value is NaN or infinite (one host sync; call every K steps)."""
        return torch.nonzero(~torch.isfinite(values)).flatten().tolist()

    def drop(self, runs: Sequence[int]) -> None:
        """Remove runs (positions) from the group; the others keep their exact state.

        The stacks, the momentum buffers and the alphas are rebuilt without the dropped
        slices, and a new optimizer is made over the new leaves.
        """
        drop = {self._index(r) for r in runs}
        keep = [i for i in range(self.num_runs) if i not in drop]
        if not keep:
            raise ValueError("cannot drop every run of a group")
        idx = torch.tensor(keep, device=self.device)
        old_states = [self._opt_state(p) for p in self.params.values()]
        lr = self.opt.param_groups[0]["lr"]
        self.params = {
            k: v.detach().index_select(0, idx).clone().requires_grad_(v.requires_grad)
            for k, v in self.params.items()
        }
        self.buffers = {k: v.index_select(0, idx).clone() for k, v in self.buffers.items()}
        self.opt = self._make_optimizer(lr)
        for p, st in zip(self.params.values(), old_states):
            if st is not None:
                self.opt.state[p] = {
                    k: (v.index_select(0, idx) if isinstance(v, torch.Tensor) and v.dim() > 0 else v)
                    for k, v in st.items()
                }
        self.alphas = self.alphas.index_select(0, idx)
        self._alphas_list = [self._alphas_list[i] for i in keep]
        self.run_ids = [self.run_ids[i] for i in keep]
        self.robust = [self.robust[i] for i in keep]
        self._impl.bind(self.params, self.buffers, self.num_runs)
