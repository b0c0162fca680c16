"""``tools/reproduction_tables.py``: the generated tables of docs/reproduction.md, on the tiny sweep.

A copy of the session's two-run sweep gets a robustness result per run, written by hand in
the documented file format; a markdown file with prose and generated blocks is filled
from it. Every number of the tables must be the stored value (the database's row, or the
run's robustness file) to 3 decimals, the ``summary-text`` block must be what
``selectivity summarize --no-figures`` prints, ``--check`` must notice a number edited by
hand, the prose must not move, and the sweep directory must not be touched.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import RUN_A, RUN_B, load_tool
from selectivity.cli import main as cli
from selectivity.evaluate.robustness import ROBUSTNESS_NAME
from selectivity.run.files import write_json

ROBUSTNESS = {  # one run's robustness result, by hand; the attack accuracies follow
    "n_images": 40,
    "n_corruption_cells": 2,
    "settings": {
        "n_images": 40,
        "image_seed": 0,
        "corruptions": ["fog"],
        "severities": [1, 3],
        "attacks": ["pgd"],
        "epsilons": [1 / 255, 4 / 255],
        "norm": "linf",
        "pgd_steps": 10,
        "pgd_step_factor": 2.5,
        "pgd_restarts": 1,
        "attack_seed": 0,
        "source": "generated (cifar10, seed 0)",
    },
}
#: Per run: clean, the two fog cells, PGD at 1/255 and 4/255 (each a multiple of 1/40).
VALUES = {RUN_A: (0.25, 0.225, 0.175, 0.1, 0.05), RUN_B: (0.5, 0.45, 0.3, 0.275, 0.125)}

PROSE_TOP = "# Results\n\nHand-written prose: alpha = 0 is the baseline, 12.5% of it.\n"
PROSE_MID = "\nA verdict between the blocks cites 0.123 by hand.\n"
DOC = (
    PROSE_TOP
    + "\n<!-- generated: summary from tiny -->\nold table\n<!-- end generated -->\n"
    + PROSE_MID
    + "\n<!-- generated: summary-text from tiny -->\n<!-- end generated -->\n"
    + "\n<!-- generated: robustness from tiny -->\n| stale |\n<!-- end generated -->\n"
    + "\n<!-- generated: summary from elsewhere -->\nkept as written\n<!-- end generated -->\n"
    + "\nThe end.\n"
)


def load_script():
    return load_tool("reproduction_tables")


def snapshot(root: Path) -> dict[str, int]:
    """Every file and folder under ``root`` with its modification time (ns)."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def block(text: str, kind: str, label: str = "tiny") -> str:
    m = re.search(rf"<!-- generated: {kind} from {label} -->\n(.*?)\n<!-- end generated -->", text, re.S)
    assert m is not None, (kind, label)
    return m.group(1)


def table_rows(md: str) -> list[dict[str, str]]:
    """A markdown table's rows as dicts by header."""
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    split = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    return [dict(zip(split[0], r)) for r in split[2:]]


def number(cell: str) -> float:
    """The first number of a cell as a fraction: ``"37.65% [..]"`` -> 0.3765, ``"0.059"`` -> 0.059."""
    m = re.match(r"[-+]?\d+(?:\.\d+)?(%?)", cell)
    assert m is not None, cell
    x = float(m.group(0).rstrip("%"))
    return x / 100 if m.group(1) else x


@pytest.fixture(scope="module")
def tables():
    return load_script()


@pytest.fixture(scope="module")
def sweep(tiny_sweep, tmp_path_factory) -> Path:
    out = Path(shutil.copytree(tiny_sweep.path, tmp_path_factory.mktemp("reprotables") / "sweep"))
    for rid, (clean, fog1, fog3, pgd1, pgd4) in VALUES.items():
        corr = [
            {"corruption": "fog", "severity": 1, "accuracy": fog1},
            {"corruption": "fog", "severity": 3, "accuracy": fog3},
        ]
        mean = (fog1 + fog3) / 2
        attacks = [
            {"attack": "pgd", "norm": "linf", "epsilon": 1 / 255, "accuracy": pgd1},
            {"attack": "pgd", "norm": "linf", "epsilon": 4 / 255, "accuracy": pgd4},
        ]
        result = ROBUSTNESS | {"clean_accuracy": clean, "mean_corruption_accuracy": mean}
        result |= {"relative_corruption_accuracy": mean / clean, "corruptions": corr, "attacks": attacks}
        write_json(out / "runs" / rid / ROBUSTNESS_NAME, result)
    return out


def test_generated_tables_equal_the_stored_values_and_check_finds_hand_edits(tables, sweep, tmp_path, capsys):
    doc = tmp_path / "doc.md"
    doc.write_text(DOC, encoding="utf-8")
    before = snapshot(sweep)

    assert tables.main(["--sweep", f"tiny={sweep}", "--doc", str(doc)]) == 0
    err = capsys.readouterr().err
    assert "summary from elsewhere (line" in err  # the block without a sweep is named, once
    text = doc.read_text(encoding="utf-8")
    assert snapshot(sweep) == before  # nothing added, removed or touched

    # Prose and the block without its sweep stay as written.
    assert text.startswith(PROSE_TOP) and PROSE_MID in text and text.endswith("\nThe end.\n")
    assert block(text, "summary", "elsewhere") == "kept as written"
    assert "old table" not in text and "| stale |" not in text

    # summary: every number is the database's, to 3 decimals.
    con = sqlite3.connect(sweep / "results.sqlite")
    con.row_factory = sqlite3.Row
    db = {r["alpha"]: dict(r) for r in con.execute("SELECT * FROM runs")}
    con.close()
    rows = table_rows(block(text, "summary"))
    assert [r["alpha"] for r in rows] == ["-1", "1"]
    for r in rows:
        stored = db[float(r["alpha"])]
        assert r["n"] == "1"
        for col, key in (
            ("test accuracy (95% CI)", "test_accuracy"),
            ("mean SI (95% CI)", "mean_selectivity"),
            ("SI live", "mean_selectivity_live"),
            ("precision", "mean_precision"),
            ("dead units", "dead_fraction"),
        ):
            assert number(r[col]) == pytest.approx(stored[key], abs=5e-4), (r["alpha"], col)
        assert r["best epoch (by seed)"] == str(stored["best_epoch"])

    # robustness: means of the runs' files (one run per alpha here), and the settings line.
    body = block(text, "robustness")
    rows = table_rows(body)
    for r, rid in zip(rows, (RUN_A, RUN_B)):
        clean, fog1, fog3, pgd1, pgd4 = VALUES[rid]
        mean = (fog1 + fog3) / 2
        assert number(r["clean"]) == pytest.approx(clean, abs=5e-4)
        assert number(r["mean corruption acc"]) == pytest.approx(mean, abs=5e-4)
        assert number(r["relative (mean / clean)"]) == pytest.approx(mean / clean, abs=5e-4)
        assert number(r["PGD 1/255"]) == pytest.approx(pgd1, abs=5e-4)
        assert number(r["PGD 4/255"]) == pytest.approx(pgd4, abs=5e-4)
        assert number(r["mean SI"]) == pytest.approx(db[float(r["alpha"])]["mean_selectivity"], abs=5e-4)
    settings = body.split("\n")[-1]
    assert "40 test images" in settings and "fog at severities 1, 3" in settings
    assert "PGD-10 (L-inf) at 1/255, 4/255" in settings

    # summary-text: what `selectivity summarize --no-figures` prints (on a copy: it writes files).
    copy = Path(shutil.copytree(sweep, tmp_path / "copy"))
    printed = CliRunner().invoke(cli, ["summarize", str(copy), "--no-figures"])
    assert printed.exit_code == 0, printed.output
    assert "robustness (2 runs, 40 test images" in printed.stdout
    assert block(text, "summary-text") == "```text\n" + printed.stdout.rstrip("\n") + "\n```"

    # --check: passes now, names the block after a number is edited by hand, writes nothing.
    assert tables.main(["--sweep", f"tiny={sweep}", "--doc", str(doc), "--check"]) == 0
    capsys.readouterr()
    first = table_rows(block(text, "summary"))[0]["precision"]
    edited = text.replace(f"| {first} |", f"| {float(first) + 0.001:.3f} |", 1)
    assert edited != text
    doc.write_text(edited, encoding="utf-8")
    assert tables.main(["--sweep", f"tiny={sweep}", "--doc", str(doc), "--check"]) == 1
    err = capsys.readouterr().err
    assert "summary from tiny (line 5)" in err and "robustness from tiny" not in err
    assert doc.read_text(encoding="utf-8") == edited
    assert snapshot(sweep) == before


def test_malformed_markers_are_an_error_naming_the_line(tables, tmp_path, capsys):
    doc = tmp_path / "doc.md"
    for text, says in (
        ("a\n<!-- generated: summary from q -->\nb\n", "line 2: the block 'summary from q' has no"),
        ("<!-- end generated -->\n", "line 1: '<!-- end generated -->' without an opening"),
        ("<!-- generated: summary -->\n<!-- end generated -->\n", "line 1: a generated-block marker"),
        ("<!-- generated: nonsense from q -->\n<!-- end generated -->\n", "unknown table kind in nonsense"),
    ):
        doc.write_text(text, encoding="utf-8")
        assert tables.main(["--doc", str(doc)]) == 2
        assert says in capsys.readouterr().err
        assert doc.read_text(encoding="utf-8") == text


def test_robustness_summaries_block_by_hand(tables, sweep, tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- generated: robustness-summaries from tiny -->\n<!-- end generated -->\n")
    before = snapshot(sweep)
    assert tables.main(["--sweep", f"tiny={sweep}", "--doc", str(doc)]) == 0
    assert snapshot(sweep) == before
    body = block(doc.read_text(encoding="utf-8"), "robustness-summaries")
    rows = table_rows(body.split("\n\n")[0])
    assert [r["α"] for r in rows] == ["-1", "1"]
    for r, rid in zip(rows, (RUN_A, RUN_B)):
        clean, fog1, fog3, pgd1, pgd4 = VALUES[rid]
        # trapezoids from (0, clean) over epsilon in units of 1/255: widths 1 and 3
        area = (clean + pgd1) / 2 * 1 + (pgd1 + pgd4) / 2 * 3
        assert number(r["PGD AUC (accuracy x ε/255, ε ≤ 4/255)"]) == pytest.approx(area, abs=5e-4)
        assert number(r["PGD relative AUC"]) == pytest.approx(area / (clean * 4), abs=5e-4)
        assert number(r["corruption accuracy, 1 standard type(s)"]) == pytest.approx(
            (fog1 + fog3) / 2, abs=5e-5
        )
    assert "Spearman correlation with mean class selectivity:" in body
