"""The repository speaks for itself: no issue numbers, machine paths or files outside it.

The README, docs/, src/, benchmarks/ and tools/ must not cite an issue by number, name a
path of one machine (``/work/...``, ``/tmp/...``, ``/home/...``, ``/root/...``) or point
at files beside the checkout. tests/ is not scanned: tests find the data through
configuration and may name temporary paths.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("README.md", "docs", "src", "benchmarks", "tools")
PATTERN = r"\b[Ii]ssues? [0-9]+|\b[Ii]ssue( #|[-#])?[0-9]+|[ `(]/(work|tmp|home|root)/|shared/SCIENCE|SCIENCE\.md|\.\./shared"
TEXT_SUFFIXES = {
    ".md",
    ".py",
    ".txt",
    ".toml",
    ".cfg",
    ".html",
    ".j2",
    ".jinja",
    ".css",
    ".json",
    ".yaml",
    ".yml",
    "",
}


def offending_lines() -> list[str]:
    """``path:line: text`` of every scanned line that matches :data:`PATTERN`."""
    if shutil.which("git") and (ROOT / ".git").exists():
        r = subprocess.run(
            ["git", "grep", "-nE", PATTERN, "--", *SCANNED], cwd=ROOT, capture_output=True, text=True
        )
        assert r.returncode in (0, 1), r.stderr  # 1: no match
        return r.stdout.splitlines()
    rx = re.compile(PATTERN)
    out = []
    for name in SCANNED:
        top = ROOT / name
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for p in files:
            if p.suffix not in TEXT_SUFFIXES or "__pycache__" in p.parts:
                continue
            for i, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                if rx.search(line):
                    out.append(f"{p.relative_to(ROOT)}:{i}:{line}")
    return out


def test_no_issue_numbers_machine_paths_or_outside_files():
    assert offending_lines() == []


def test_the_pattern_finds_what_it_forbids():
    rx = re.compile(PATTERN)
    for bad in (
        "since issue 13 a dead unit",
        "(issues 9, 12)",
        "Issue #4",
        "Issue-10 benchmark",
        "cp -a /work/medium_out/quick x",
        "see `/tmp/geo_quick`",
        "(/home/user/data)",
        "--data ../shared/data",
        "SCIENCE.md section 3",
    ):
        assert rx.search(bad), bad
    for fine in (
        "issues are welcome",
        "tissue 5",
        "sweeps/quick",
        "--data DATA",
        "$SELECTIVITY_DATA",
        "a/tmp/b",
    ):
        assert not rx.search(fine), fine
