"""The report page, rendered from a Jinja2 template with autoescaping on.

Every string that comes from a run directory (statuses, messages, config values, run
and layer names) reaches the page through the template, which escapes it; the only
markup the Python side makes is the base64 ``data:`` URI of each figure. The page is
one loop over the report's :class:`~.section.Section` list.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from .collect import TITLE, FigureItem, ReportData, Setting, TableItem
from .section import Section, walk

__all__ = ["render_html", "template_environment"]

_NUMERIC = re.compile(r"^[-+]?(\d|\.\d|inf|nan)")


def template_environment() -> jinja2.Environment:
    """The package's Jinja2 environment: templates from ``report/templates``, autoescaping on."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("selectivity.report", "templates"),
        autoescape=True,  # every template, whatever its file name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["text"] = _text
    return env


def _text(v: Any) -> str:
    """None as an empty string (the template escapes the result like any other value)."""
    return "" if v is None else str(v)


def _cell(v: Any) -> dict[str, Any]:
    """Text of one table cell and whether it is left-aligned text (not a number)."""
    s = (
        "-"
        if v is None or (isinstance(v, float) and not np.isfinite(v))
        else (format(v, ".4g") if isinstance(v, (float, np.floating)) else str(v))
    )
    numeric = isinstance(v, (int, float, np.number)) or bool(_NUMERIC.match(s))
    return {"text": s, "is_text": not numeric}


def _table_view(t: TableItem, out_dir: Path) -> dict[str, Any]:
    shown = t.display if t.display is not None else t.data
    rows: list[list[dict[str, Any]]] = []
    columns: list[str] = []
    if shown is not None and not shown.empty:
        columns = [str(c) for c in shown.columns]
        rows = [[_cell(v) for v in row] for row in shown.itertuples(index=False)]
    return {
        "id": t.id,
        "title": t.title,
        "note": t.note,
        "caption": t.caption,
        "csv": t.path.relative_to(out_dir).as_posix() if t.path is not None else None,
        "columns": columns,
        "rows": rows,
    }


def _figure_view(f: FigureItem, out_dir: Path) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": f.id,
        "paper": f.paper,
        "title": f.title,
        "caption": f.caption,
        "note": f.note,
        "wide": f.wide,
        "src": None,
        "file": None,
    }
    if f.path is not None:
        b64 = base64.b64encode(Path(f.path).read_bytes()).decode("ascii")
        view["src"] = f"data:image/png;base64,{b64}"
        view["file"] = Path(f.path).relative_to(out_dir).as_posix()
    return view


def _section_view(sec: Section, out_dir: Path) -> dict[str, Any]:
    return {
        "id": sec.id,
        "heading": sec.heading,
        "caption": sec.caption,
        "notes": [n for n in sec.notes if n],
        "settings": [{"term": str(k), "value": str(v)} for k, v in sec.settings],
        "tables": [_table_view(t, out_dir) for t in sec.tables if t.show],
        "figures": [_figure_view(f, out_dir) for f in sec.figures],
        "subsections": [_section_view(s, out_dir) for s in sec.subsections],
    }


def _files(sections: Sequence[Section], out_dir: Path) -> list[str]:
    paths = set()
    for sec in walk(sections):
        paths |= {Path(t.path).relative_to(out_dir).as_posix() for t in sec.tables if t.path}
        paths |= {Path(f.path).relative_to(out_dir).as_posix() for f in sec.figures if f.path}
    return sorted(paths)


def render_html(
    data: ReportData,
    settings: Sequence[Setting],
    sections: Sequence[Section],
    out_dir: str | os.PathLike,
) -> str:
    """The report page as one HTML string (images inline, no script, no external resource).

    The page header (sweep, runs, settings), then every section of ``sections`` in one
    template loop (its contents entry, caption, notes, settings, tables, figures and
    subsections), then the list of files.
    """
    out_dir = Path(out_dir)
    n = len(data.runs)
    status = data.runs["status"].value_counts().to_dict() if n else {}
    spec = data.sweep.get("spec", {}) if isinstance(data.sweep, dict) else {}
    return (
        template_environment()
        .get_template("report.html.j2")
        .render(
            title=TITLE,
            sweep_name=data.sweep_dir.name,
            sweep_path=str(data.sweep_dir.resolve()),
            generated=data.generated,
            generator=data.generator,
            n_runs=n,
            status_text=", ".join(f"{v} {k}" for k, v in sorted(status.items())) or "none",
            setting_labels=[s.label for s in settings],
            spec_preset=spec.get("preset") if spec else None,
            spec_overrides=json.dumps(spec.get("overrides", {})) if spec else None,
            has_spec=bool(spec),
            sections=[_section_view(sec, out_dir) for sec in sections],
            files=_files(sections, out_dir),
        )
    )
