"""Fill the generated tables of a markdown file (``docs/reproduction.md``) from sweep directories.

A generated block is delimited by two HTML comments, each on a line of its own::

    <!-- generated: KIND from LABEL -->
    ...                                  (replaced by the freshly rendered table)
    <!-- end generated -->

``KIND`` is one of :data:`KINDS`; ``LABEL`` names a sweep given on the command line as
``--sweep LABEL=PATH``. Everything outside the blocks (the prose, the verdicts) is left
as written. Blocks whose label is not given are left as they are (one line on stderr
says which). ``--check`` writes nothing and exits 1 naming the blocks whose text differs
from a fresh rendering.

The sweep directories are only read (``selectivity.open_sweep`` and
``selectivity.report.results.read_store`` copy the database out); the numbers are
computed and formatted by the package's own functions, so they equal what
``selectivity summarize SWEEP`` prints:

* ``summary``: per model and alpha, completed runs ``n``, test accuracy and mean SI with
  their bootstrapped 95% CI (``selectivity.analysis.summary.summary_table``, the table
  of ``selectivity summarize``), SI without dead units, precision, dead units, and the
  best-validation epoch of each run (by seed).
* ``summary-text``: the exact text ``selectivity summarize SWEEP --no-figures`` prints
  (the summary table and the robustness headline), in a fenced code block. The sweep
  command prints the same text at its end, followed by the line naming the figures.
* ``robustness``: per model and alpha, the mean over runs of the clean accuracy, the mean
  corruption accuracy, the relative corruption accuracy and the accuracy under each
  attack and epsilon, for the sweep's default robustness settings (those ``selectivity
  summarize`` and ``selectivity report`` show), which are stated in one line under the
  table, from the stored settings.
* ``robustness-spearman``: Spearman's rho of each robustness measure (absolute and
  relative to clean accuracy) with the runs' mean class selectivity across the runs,
  its p-value and 95% percentile bootstrap CI (``selectivity.analysis.stats.spearman_ci``,
  2000 resamples, seed 0, as the report).
* ``robustness-summaries``: the report's robustness summaries
  (``selectivity.report.robustness_summaries.summary_tables``): per alpha, the mean and
  95% CI over runs of the area under accuracy vs epsilon (absolute and relative to
  clean), the corruption accuracy over the standard types, the corruption error against
  the alpha = 0 networks (mCE style, absolute and relative) and the worst-case accuracies
  at 8/255; then each measure's Spearman rho with mean class selectivity.
* ``mechanisms``: the geometry results (``selectivity geometry``) as the report's
  Mechanisms section computes them (``selectivity.report.mechanisms.mechanism_statistics``):
  a line with the stored geometry settings; by alpha, the clean and change dimensionality,
  the early-layer dimensionality increase, the increase and change per perturbation and
  every input-unit gradient measure; and the Spearman correlation of each per-run measure
  with mean class selectivity.

Usage::

    python tools/reproduction_tables.py --sweep quick=sweeps/quick --sweep quick-vit=sweeps/quick-vit
    python tools/reproduction_tables.py --sweep quick=sweeps/quick --check
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

import selectivity
from selectivity.analysis.stats import spearman_ci
from selectivity.analysis.summary import summary_table
from selectivity.evaluate.geometry import GEOMETRY_TABLES, geometry_results
from selectivity.evaluate.geometry import pick_settings as pick_geometry_settings
from selectivity.evaluate.robustness import ROBUSTNESS_TABLES, pick_settings
from selectivity.report.collect import collect
from selectivity.report.format import format_alpha, format_ci, format_number, format_p, format_percent
from selectivity.report.mechanisms import mechanism_statistics
from selectivity.report.results import read_store
from selectivity.report.robust_training import method_statistics, robust_frame
from selectivity.report.robustness_summaries import summary_tables
from selectivity.report.summary import format_robustness, format_summary
from selectivity.run.files import SweepFiles, read_json

DEFAULT_DOC = Path(__file__).resolve().parents[1] / "docs" / "reproduction.md"
BEGIN = re.compile(r"^<!-- generated: (?P<kind>[A-Za-z0-9_-]+) from (?P<label>[A-Za-z0-9_.-]+) -->$")
END = "<!-- end generated -->"
#: Metrics of the ``summary`` table, in the runs frame's names.
SUMMARY_METRICS = (
    "test_accuracy",
    "mean_selectivity",
    "mean_selectivity_live",
    "mean_precision",
    "dead_fraction",
)
#: Robustness measures of the ``robustness-spearman`` table: column, label.
SPEARMAN_MEASURES = (
    ("clean_accuracy", "clean accuracy"),
    ("mean_corruption_accuracy", "mean corruption accuracy"),
    ("relative_corruption_accuracy", "relative corruption accuracy (mean / clean)"),
)


class DocError(Exception):
    """A malformed document, an unknown table kind or an unreadable sweep (exit status 2)."""


# --------------------------------------------------------------------------- the document
@dataclass(frozen=True)
class Block:
    """One generated block: its kind, its sweep label, its text and where it stands."""

    kind: str
    label: str
    body: str  # the lines between the markers, joined with newlines (no leading/trailing newline)
    start: int  # index of the opening marker's line
    end: int  # index of the closing marker's line

    @property
    def name(self) -> str:
        return f"{self.kind} from {self.label} (line {self.start + 1})"


def find_blocks(lines: Sequence[str]) -> list[Block]:
    """The generated blocks of a document given as lines (without newlines).

    Raises
    ------
    DocError
        An opening marker without its end, an end without an opening, nested blocks, or a
        comment that starts like a marker but does not parse.
    """
    blocks: list[Block] = []
    open_at: int | None = None
    kind = label = ""
    for i, line in enumerate(lines):
        text = line.strip()
        if text.startswith("<!-- generated"):
            m = BEGIN.match(text)
            if m is None:
                raise DocError(
                    f"line {i + 1}: a generated-block marker must read '<!-- generated: KIND from LABEL -->'"
                )
            if open_at is not None:
                raise DocError(f"line {i + 1}: a block opens inside the block of line {open_at + 1}")
            open_at, kind, label = i, m["kind"], m["label"]
        elif text == END:
            if open_at is None:
                raise DocError(f"line {i + 1}: '{END}' without an opening marker")
            blocks.append(Block(kind, label, "\n".join(lines[open_at + 1 : i]).strip("\n"), open_at, i))
            open_at = None
    if open_at is not None:
        raise DocError(f"line {open_at + 1}: the block '{kind} from {label}' has no '{END}'")
    return blocks


def replace_blocks(lines: Sequence[str], new: dict[int, str]) -> list[str]:
    """``lines`` with the bodies of the blocks starting at the keys of ``new`` replaced."""
    out: list[str] = []
    blocks = {b.start: b for b in find_blocks(lines)}
    i = 0
    while i < len(lines):
        b = blocks.get(i)
        if b is not None and b.start in new:
            out += [lines[b.start], *new[b.start].split("\n"), lines[b.end]]
            i = b.end + 1
        else:
            out.append(lines[i])
            i += 1
    return out


# --------------------------------------------------------------------------- the sweeps
class Sweep:
    """A sweep directory, read once: its runs and its default robustness settings' rows."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            with selectivity.open_sweep(self.path) as sw:
                self.runs = sw.runs
        except FileNotFoundError as e:
            raise DocError(str(e)) from e

    @cached_property
    def robustness(self) -> dict[str, pd.DataFrame]:
        """``summary``, ``corruptions``, ``attacks`` of the settings ``selectivity summarize`` shows.

        The same choice as ``selectivity.evaluate.robustness.robustness_frames``, on an
        in-memory copy of the database (that function brings the database on disk up to date).
        """
        store = read_store(self.path)
        try:
            frames = {k: store.frame(ROBUSTNESS_TABLES, k) for k in ROBUSTNESS_TABLES.tables}
        finally:
            store.close()
        return pick_settings(frames, self.path)

    @cached_property
    def geometry(self) -> pd.DataFrame:
        """The geometry rows of the settings the report shows, from an in-memory copy of the database."""
        store = read_store(self.path, analyses=[GEOMETRY_TABLES])
        try:
            return pick_geometry_settings(store.frame(GEOMETRY_TABLES, "rows"))
        finally:
            store.close()


def _groups(df: pd.DataFrame) -> list[str]:
    """Group columns: model only when the frame has several, then alpha."""
    return [c for c in ("model",) if c in df.columns and df[c].nunique() > 1] + ["alpha"]


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def render_summary(sweep: Sweep) -> str:
    """The ``summary`` table: per (model,) alpha, the summary statistics of the completed runs."""
    runs = sweep.runs
    metrics = [m for m in SUMMARY_METRICS if m in runs.columns]
    table = summary_table(runs, metrics=metrics)
    keys = _groups(table) if "model" in table.columns else ["alpha"]
    done = runs[runs["status"] == "completed"]
    headers = [*keys, "n", "test accuracy (95% CI)", "mean SI (95% CI)", "SI live", "precision", "dead units"]
    headers.append("best epoch (by seed)")
    failed = [c for c in ("n_failed", "n_diverged") if c in table.columns and table[c].sum() > 0]
    headers += [c[2:] for c in failed]
    rows = []
    for _, r in table.iterrows():
        cells = [str(r[k]) if k != "alpha" else format_alpha(r[k]) for k in keys]
        cells.append(str(int(r["n"])))
        cells.append(
            format_ci(
                r["test_accuracy_mean"],
                r["test_accuracy_ci_low"],
                r["test_accuracy_ci_high"],
                r["n"],
                100.0,
                2,
                "%",
            )
        )
        cells.append(
            format_ci(
                r["mean_selectivity_mean"],
                r["mean_selectivity_ci_low"],
                r["mean_selectivity_ci_high"],
                r["n"],
            )
        )
        for m, fmt in (
            ("mean_selectivity_live", lambda v: format_number(v, ".3f")),
            ("mean_precision", lambda v: format_number(v, ".3f")),
            ("dead_fraction", format_percent),
        ):
            cells.append(fmt(r[f"{m}_mean"]) if f"{m}_mean" in table.columns and r["n"] else "-")
        sel = done[
            (done["alpha"] == r["alpha"]) & ((done["model"] == r["model"]) if "model" in keys else True)
        ]
        cells.append(", ".join(str(int(e)) for e in sel.sort_values("seed")["best_epoch"].dropna()) or "-")
        cells += [str(int(r[c])) for c in failed]
        rows.append(cells)
    return _table(headers, rows)


def render_summary_text(sweep: Sweep) -> str:
    """What ``selectivity summarize SWEEP --no-figures`` prints, in a fenced code block."""
    runs = sweep.runs
    if runs.empty:
        text = "no runs recorded yet"
    else:
        text = format_summary(summary_table(runs))
        rob = sweep.robustness
        if not rob["summary"].empty:
            text += "\n" + format_robustness(rob["summary"], rob["attacks"])
    return f"```text\n{text}\n```"


def _eps(eps: float, norm: str) -> str:
    return f"{round(float(eps) * 255, 3):g}/255" if norm == "linf" else f"{float(eps):g}"


def _attack_name(attack: str, norm: str, eps: float) -> str:
    return f"{attack.upper()} {_eps(eps, norm)}" + ("" if norm == "linf" else f" ({norm})")


def describe_settings(summary: pd.DataFrame) -> str:
    """One line saying with which stored settings the robustness rows were computed."""
    attrs = summary.attrs
    raw = attrs.get("settings")
    s = json.loads(raw) if raw else {}
    n_images = sorted({int(v) for v in summary["n_images"].dropna()}) if "n_images" in summary else []
    parts = []
    images = "/".join(map(str, n_images)) or str(s.get("n_images", "?"))
    parts.append(f"{images} test images (class-stratified, seed {s.get('image_seed', '?')})")
    corr = s.get("corruptions")
    cells = sorted({int(v) for v in summary.get("n_corruption_cells", pd.Series(dtype=float)).dropna()})
    if corr is not None:
        names = ", ".join(corr) if isinstance(corr, list) else str(corr)
        sev = ", ".join(map(str, s.get("severities", [])))
        source = s.get("source") or s.get("corrupted") or "generated"
        parts.append(f"corruptions {names} at severities {sev} ({'/'.join(map(str, cells))} cells; {source})")
    all_attacks = s.get("attacks") or []
    apgd = [a for a in all_attacks if a.startswith("apgd")]
    attacks = [a for a in all_attacks if not a.startswith("apgd")]
    if apgd:  # APGD runs at its own budgets (apgd_epsilons; None: the epsilons)
        norm = s.get("norm", "linf")
        budgets = s.get("apgd_epsilons") or s.get("epsilons", [])
        steps = s.get("apgd_steps", "?")
        parts.append(
            f"{', '.join(a.upper() for a in apgd)} ({norm.replace('linf', 'L-inf').replace('l2', 'L2')}) at "
            f"{', '.join(_eps(e, norm) for e in budgets)}, {steps} iterations, {s.get('apgd_restarts', '?')} "
            f"restart(s), {s.get('apgd_target_classes', '?')} target classes for APGD-T"
        )
    if attacks:
        norm = s.get("norm", "linf")
        eps = ", ".join(_eps(e, norm) for e in s.get("epsilons", []))
        names = ", ".join(
            a.upper() + (f"-{s['pgd_steps']}" if a == "pgd" and "pgd_steps" in s else "") for a in attacks
        )
        pgd = ""
        if "pgd" in attacks:
            pgd = (
                f", PGD step {s.get('pgd_step_factor', '?')} x eps / steps, {s.get('pgd_restarts', '?')} random "
                f"start(s), seed {s.get('attack_seed', '?')}"
            )
        parts.append(f"{names} ({norm.replace('linf', 'L-inf').replace('l2', 'L2')}) at {eps}{pgd}")
    why = attrs.get("default_because")
    others = attrs.get("others") or 0
    tail = f"; settings key {attrs.get('settings_key')}"
    if why:
        tail += f", chosen as the sweep's default settings: {why}"
    if others:
        tail += f"; {others} other settings have results"
    return "Robustness settings (stored with the results): " + "; ".join(parts) + tail + "."


def render_robustness(sweep: Sweep) -> str:
    """The ``robustness`` table (means over the runs of each group) and its settings line."""
    rob = sweep.robustness
    summary, attacks = rob["summary"], rob["attacks"]
    if summary.empty:
        return "(no robustness results in this sweep)"
    keys = _groups(summary)
    g = summary.groupby(keys, sort=True)
    means = g[
        ["mean_selectivity", "clean_accuracy", "mean_corruption_accuracy", "relative_corruption_accuracy"]
    ].mean()
    means["n"] = g.size()
    columns: dict[str, pd.Series] = {}
    if not attacks.empty:
        for (atk, norm, eps), rows in attacks.groupby(["attack", "norm", "epsilon"], sort=True):
            columns[_attack_name(atk, norm, eps)] = rows.groupby(keys)["accuracy"].mean()
    headers = [*keys, "n", "mean SI", "clean", "mean corruption acc", "relative (mean / clean)", *columns]
    out = []
    for idx, r in means.iterrows():
        cells = [
            format_alpha(v) if k == "alpha" else str(v)
            for k, v in zip(keys, idx if isinstance(idx, tuple) else (idx,))
        ]
        cells += [
            str(int(r["n"])),
            format_number(r["mean_selectivity"], ".3f"),
            format_percent(r["clean_accuracy"]),
        ]
        cells += [
            format_percent(r["mean_corruption_accuracy"]),
            format_number(r["relative_corruption_accuracy"], ".3f"),
        ]
        cells += [format_percent(col.get(idx)) for col in columns.values()]
        out.append(cells)
    return _table(headers, out) + "\n\n" + describe_settings(summary)


def render_robustness_spearman(sweep: Sweep) -> str:
    """Spearman's rho of each robustness measure with mean SI across runs, with its bootstrap CI."""
    rob = sweep.robustness
    summary, attacks = rob["summary"], rob["attacks"]
    if summary.empty:
        return "(no robustness results in this sweep)"
    per_run = summary.set_index("run_id")
    measures = [(per_run[c], label) for c, label in SPEARMAN_MEASURES]
    if not attacks.empty:
        for (atk, norm, eps), rows in attacks.groupby(["attack", "norm", "epsilon"], sort=True):
            acc = rows.groupby("run_id")["accuracy"].mean().reindex(per_run.index)
            name = _attack_name(atk, norm, eps)
            measures.append((acc, f"{name} accuracy"))
            measures.append((acc / per_run["clean_accuracy"], f"{name} accuracy / clean"))
    rows_out = []
    for values, label in measures:
        s = spearman_ci(per_run["mean_selectivity"], values)
        ci = f"[{format_number(s['ci_low'], '+.2f')}, {format_number(s['ci_high'], '+.2f')}]"
        rows_out.append([label, format_number(s["rho"], "+.3f"), format_p(s["p"]), ci, str(s["n"])])
    return _table(["measure", "Spearman rho with mean SI", "p", "95% bootstrap CI", "runs"], rows_out)


def render_robust_training(sweep: Sweep) -> str:
    """The ``robust-training`` table: per model, alpha and training method, each measure's
    mean with its 95% CI, and the difference in mean SI from standard training with its
    Bonferroni-corrected p (what the report's robust-training section computes)."""
    stats = method_statistics(robust_frame(collect(sweep.path)))
    if stats.empty:
        return "(no completed runs)"
    pct = {"test_accuracy", "clean_accuracy", "mean_corruption_accuracy"}
    measures = list(dict.fromkeys(stats["measure"]))
    order = ["mean_selectivity", *[m for m in measures if m != "mean_selectivity"]]
    names = {"mean_selectivity": "mean SI", "test_accuracy": "test accuracy", "clean_accuracy": "clean"}
    names["mean_corruption_accuracy"] = "mean corruption"
    blocks = []
    for (model, alpha), g in stats.groupby(["model", "alpha"], sort=True):
        headers = ["method", "n", *[names.get(m, m) for m in order], "SI diff vs none", "p (Bonferroni)"]
        rows = []
        for method, gm in g.groupby("method", sort=False):
            by = gm.set_index("measure")
            cells = [str(method), str(int(by.loc["mean_selectivity", "n"]))]
            for m in order:
                if m not in by.index:
                    cells.append("-")
                    continue
                r = by.loc[m]
                if m in pct or m.endswith("/255"):
                    cells.append(format_ci(r["mean"], r["ci_low"], r["ci_high"], r["n"], 100.0, 2, "%"))
                else:
                    cells.append(format_ci(r["mean"], r["ci_low"], r["ci_high"], r["n"]))
            si = by.loc["mean_selectivity"]
            cells.append(format_number(si["diff"], "+.3f") if pd.notna(si["diff"]) else "-")
            cells.append(format_p(si["p_bonferroni"]) if pd.notna(si["p_bonferroni"]) else "-")
            rows.append(cells)
        blocks.append(f"{model}, alpha {format_alpha(alpha)}:\n\n" + _table(headers, rows))
    return "\n\n".join(blocks)


def _frame_table(frame: pd.DataFrame) -> str:
    return _table(
        [str(c) for c in frame.columns], [[str(v) for v in row] for row in frame.itertuples(index=False)]
    )


def describe_geometry(sweep: Sweep, geometry: pd.DataFrame) -> str:
    """One line: the geometry settings of the shown results (stored with each run's results)."""
    key = str(geometry["settings_key"].iloc[0])
    run_id = str(geometry["run_id"].iloc[0])
    try:
        # geometry_results also finds a result of the older one-file layout
        path = geometry_results(SweepFiles(sweep.path).run(run_id))[key]
        s = read_json(path)["settings"]
    except (OSError, ValueError, KeyError) as e:
        raise DocError(f"cannot read the geometry settings of {run_id}: {e}") from e
    kinds = geometry[geometry["layer_index"] >= 0].groupby("kind")["perturbation"].nunique()
    eps = ", ".join(_eps(e, "linf") for e in s.get("epsilons") or [])
    parts = [
        f"{s.get('images_used', s.get('n_images'))} test images (seed {s.get('image_seed')})",
        f"{len(s.get('layers') or [])} layers, units = {s.get('units')}, PCA at {s.get('share')}",
        f"{int(kinds.get('corruption', 0))} corruption cells ({len(s.get('corruptions') or [])} corruptions at "
        f"severities {', '.join(str(v) for v in s.get('severities') or [])}, {s.get('corruption_params')} "
        "parameters)",
        f"{int(kinds.get('adversarial', 0))} attacks ({', '.join(s.get('attacks') or [])} at {eps}; PGD "
        f"{s.get('pgd_steps')} steps, step factor {s.get('pgd_step_factor')}, {s.get('pgd_restarts')} "
        f"restart(s), seed {s.get('attack_seed')})",
        f"matched L2 PGD {'on' if s.get('match_l2') else 'off'}",
        f"{s.get('gradient_images')} gradient images over {len(s.get('gradient_layers') or [])} layers",
    ]
    return f"Geometry settings (stored with the results; settings key {key}): " + "; ".join(parts) + "."


def render_robustness_summaries(sweep: Sweep) -> str:
    """The report's robustness summaries: per-alpha AUC, mCE and worst case, then Spearman rho."""
    tables = summary_tables(sweep.robustness)
    if tables["by_alpha"].empty:
        return "(no robustness results in this sweep)"
    return "\n\n".join(
        [
            _frame_table(tables["by_alpha"]),
            "Spearman correlation with mean class selectivity:",
            _frame_table(tables["spearman"]),
        ]
    )


def render_mechanisms(sweep: Sweep) -> str:
    """The report's Mechanisms tables: increase by alpha, gradient measures by alpha, Spearman rho."""
    geometry = sweep.geometry
    st = mechanism_statistics(geometry)
    if st is None:
        return "(no geometry results in this sweep)"
    parts = [
        describe_geometry(sweep, geometry),
        f"Early layers: {st.early_text.removeprefix('early layers = ')}.",
    ]
    if not st.dimensionality_view.empty:
        parts += [
            "Dimensionality of the clean representation and of the change (mean [95% CI] over runs):",
            _frame_table(st.dimensionality_view),
        ]
    if not st.increase_view.empty:
        parts += [
            "Early-layer increase (perturbed minus clean dimensionality of the same images; mean [95% CI] "
            "over runs):",
            _frame_table(st.increase_view),
        ]
    if not st.by_perturbation_view.empty:
        parts += [
            "Early-layer increase and change dimensionality per perturbation (corruptions pooled by severity; "
            "mean over runs):",
            _frame_table(st.by_perturbation_view),
        ]
    if not st.gradients_view.empty:
        parts += ["Input-unit gradient measures (mean [95% CI] over runs):", _frame_table(st.gradients_view)]
    if not st.spearman.empty:
        parts += ["Spearman correlation with mean class selectivity:", _frame_table(st.spearman_view())]
    return "\n\n".join(parts)


KINDS: dict[str, Callable[[Sweep], str]] = {
    "robustness-summaries": render_robustness_summaries,
    "mechanisms": render_mechanisms,
    "summary": render_summary,
    "summary-text": render_summary_text,
    "robustness": render_robustness,
    "robustness-spearman": render_robustness_spearman,
    "robust-training": render_robust_training,
}


# --------------------------------------------------------------------------- the command
def _sweep_arg(text: str) -> tuple[str, str]:
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"expected LABEL=PATH, got {text!r}")
    return label, path


def main(argv: Sequence[str] | None = None) -> int:
    """Regenerate (or ``--check``) the generated blocks of a document; the exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sweep",
        action="append",
        type=_sweep_arg,
        default=[],
        metavar="LABEL=PATH",
        help="a sweep directory and the label its blocks name (repeatable)",
    )
    p.add_argument(
        "--doc", type=Path, default=DEFAULT_DOC, help="markdown file (default: docs/reproduction.md)"
    )
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a block differs")
    args = p.parse_args(argv)
    paths = dict(args.sweep)
    try:
        text = args.doc.read_text(encoding="utf-8")
        lines = text.split("\n")
        blocks = find_blocks(lines)
        unknown = [b.name for b in blocks if b.kind not in KINDS]
        if unknown:
            raise DocError(f"unknown table kind in {', '.join(unknown)} (kinds: {', '.join(KINDS)})")
        sweeps: dict[str, Sweep] = {}
        new: dict[int, str] = {}
        for b in blocks:
            if b.label in paths:
                if b.label not in sweeps:
                    sweeps[b.label] = Sweep(paths[b.label])
                new[b.start] = KINDS[b.kind](sweeps[b.label])
    except (DocError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    skipped = [b.name for b in blocks if b.label not in paths]
    if skipped:
        print(f"left as they are (no --sweep for their label): {'; '.join(skipped)}", file=sys.stderr)
    unused = sorted(set(paths) - {b.label for b in blocks})
    if unused:
        print(f"no block names the sweep label(s) {', '.join(unused)}", file=sys.stderr)
    differ = [b.name for b in blocks if b.start in new and new[b.start] != b.body]
    if args.check:
        if differ:
            print(f"{args.doc}: differ from their sweeps: {'; '.join(differ)}", file=sys.stderr)
            return 1
        print(f"{args.doc}: {len(new)} generated block(s) up to date", file=sys.stderr)
        return 0
    if differ:
        tmp = args.doc.with_name(args.doc.name + ".tmp")
        tmp.write_text("\n".join(replace_blocks(lines, new)), encoding="utf-8")
        tmp.replace(args.doc)
    print(f"{args.doc}: {len(new)} generated block(s), {len(differ)} changed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
