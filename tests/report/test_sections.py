"""The report's sections as data: one collect, one registry, guarded builders (synthetic records, ~15 s)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import selectivity.report as report_pkg
from selectivity.report import (
    ReportContext,
    ReportStats,
    Section,
    SectionSpec,
    TableItem,
    build_report,
    build_sections,
    collect,
    figure_item,
)
from selectivity.report.mechanisms import mechanism_sections
from selectivity.run.config import make_config
from selectivity.run.files import write_json

N_RES = 20  # bootstrap resamples: enough for the structure under test
DPI = 30


def _records(root: Path) -> Path:
    """Run directories without checkpoints: alpha -1, 0, 1 x seeds 0, 1, with robustness results."""
    rng = np.random.default_rng(0)
    for alpha in (-1.0, 0.0, 1.0):
        for seed in (0, 1):
            rid = f"resnet20_alpha{alpha:+g}_seed{seed}"
            d = root / "runs" / rid
            write_json(d / "config.json", make_config("smoke", dict(alpha=alpha, seed=seed)).to_dict())
            layers = [
                dict(layer=f"l{i}", units=8, selectivity=float(rng.uniform(0.1, 0.3)), precision=0.2)
                for i in range(3)
            ]
            write_json(
                d / "result.json",
                dict(
                    status="completed",
                    test_accuracy=float(0.8 - 0.05 * alpha + rng.normal(0, 0.01)),
                    mean_selectivity=float(np.mean([x["selectivity"] for x in layers])),
                    mean_precision=0.2,
                    dead_fraction=0.0,
                    layers=layers,
                ),
            )
            cells = [
                {"corruption": c, "severity": s, "accuracy": float(rng.uniform(0.3, 0.6))}
                for c in ("gaussian_noise", "fog")
                for s in (1, 3, 5)
            ]
            clean = float(rng.uniform(0.7, 0.9))
            mean = float(np.mean([c["accuracy"] for c in cells]))
            write_json(
                d / "robustness.json",
                dict(
                    settings={"corruptions": ["gaussian_noise", "fog"], "attacks": ["pgd"], "images": 40},
                    n_images=40,
                    clean_accuracy=clean,
                    corruptions=cells,
                    n_corruption_cells=len(cells),
                    mean_corruption_accuracy=mean,
                    relative_corruption_accuracy=mean / clean,
                    attacks=[
                        {
                            "attack": "pgd",
                            "norm": "linf",
                            "epsilon": e / 255,
                            "accuracy": float(rng.uniform(0, 0.5)),
                        }
                        for e in (1, 2, 4)
                    ],
                ),
            )
    return root


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    return _records(tmp_path_factory.mktemp("sections") / "sweep")


def _extra_section(ctx: ReportContext) -> list[Section]:
    """A section added from outside the package: a table and a figure from the collected runs."""
    from selectivity.plots.style import new_ax

    runs = ctx.data.runs

    def draw():
        ax = new_ax(None)
        ax.bar(range(len(runs)), runs["test_accuracy"])
        return ax

    table = TableItem("extra-table", "Runs per alpha", runs.groupby("alpha").size().reset_index(name="runs"))
    fig = figure_item(ctx, "extra-fig", "Extra", "Accuracy per run", "One bar per run.", draw)
    return [
        Section(
            id="extra", heading="An extra section", caption="Made by `a test`.", tables=[table], figures=[fig]
        )
    ]


def _broken_section(ctx: ReportContext) -> list[Section]:
    raise RuntimeError("broken on purpose")


@pytest.fixture(scope="module")
def page(sweep, tmp_path_factory) -> tuple[str, Path, list[str], list[Path]]:
    """One report with an extra section, a broken one, and a figure that cannot be drawn.

    Also counts the scans of the run directories (syncs of the results store).
    """
    import selectivity.report.robustness as rob
    import selectivity.sweep.store as store_mod

    scans: list[Path] = []
    original = store_mod.sync_store

    def counting(store, sweep_dir, **kw):
        scans.append(Path(sweep_dir))
        return original(store, sweep_dir, **kw)

    def fail(*_a, **_k):
        raise ValueError("no data to draw")

    specs = report_pkg.SECTIONS
    extra = SectionSpec("extra", "An extra section", _extra_section)
    broken = SectionSpec("broken", "Broken section", _broken_section)
    out = tmp_path_factory.mktemp("sections-out")
    messages: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report_pkg, "SECTIONS", (broken, *specs[:-1], extra, specs[-1]))
        mp.setattr(rob, "plot_accuracy_vs_severity", fail)
        mp.setattr(store_mod, "sync_store", counting)
        html = build_report(sweep, out, n_resamples=N_RES, dpi=DPI, log=messages.append)
    return html.read_text(encoding="utf-8"), out, messages, scans


def test_a_new_section_is_one_builder_and_one_registry_entry(page):
    html, out, _, _ = page
    assert '<li><a href="#extra">An extra section</a></li>' in html
    assert '<section id="extra"><h2>An extra section</h2>' in html
    assert "Made by <code>a test</code>." in html  # backticks become code, the rest escaped
    assert '<figure id="extra-fig"><img src="data:image/png;base64,' in html
    assert (out / "figures" / "extra-fig.png").stat().st_size > 0
    back = pd.read_csv(out / "tables" / "extra-table.csv")
    assert back["runs"].tolist() == [2, 2, 2]
    # Page order is the registry's order: the extra section sits before Provenance.
    order = [
        html.index(f'<section id="{k}">')
        for k in ("broken", "setting-resnet20", "robustness", "extra", "provenance")
    ]
    assert order == sorted(order)


def test_a_builder_that_raises_becomes_a_note(page):
    html, _, messages, _ = page
    section = html[html.index('<section id="broken">') : html.index("</section>", html.index('id="broken"'))]
    assert "This section could not be built: RuntimeError: broken on purpose" in section
    assert (
        '<section id="robustness">' in html and '<figure id="resnet20-fig2a"><img' in html
    )  # the rest is drawn
    assert any("section broken" in m for m in messages)


def test_a_figure_that_cannot_be_drawn_becomes_a_note(page):
    html, out, messages, _ = page
    fig = html[html.index('<figure id="robustness-severity">') :]
    fig = fig[: fig.index("</figure>")]
    assert "This figure could not be drawn: ValueError: no data to draw" in fig and "<img" not in fig
    assert not (out / "figures" / "robustness-severity.png").exists()
    assert re.search(r'<figure id="robustness-alpha"[^>]*><img', html)
    assert any("figure robustness-severity" in m for m in messages)


def _geometry_frame() -> pd.DataFrame:
    rows = []
    for alpha, sel in ((-1.0, 0.1), (0.0, 0.2), (1.0, 0.3)):
        for seed in (0, 1):
            rid = f"r{alpha:+g}_{seed}"
            for li in range(3):
                for kind, measure, pert in (
                    ("clean", "pca", "none"),
                    ("corruption", "change_pca", "fog-3"),
                    ("adversarial", "change_pca", "pgd-l2-match-fog-3"),
                ):
                    rows.append(
                        dict(
                            run_id=rid,
                            alpha=alpha,
                            seed=seed,
                            mean_selectivity=sel + 0.01 * seed,
                            layer_index=li,
                            layer=f"l{li}",
                            kind=kind,
                            measure=measure,
                            perturbation=pert,
                            value=float(5 + li + alpha + 0.1 * seed),
                        )
                    )
    return pd.DataFrame(rows)


def test_mechanisms_figures_are_guarded(sweep, tmp_path, monkeypatch):
    import selectivity.report.mechanisms as mech

    def fail(*_a, **_k):
        raise ValueError("cannot draw layers")

    monkeypatch.setattr(mech, "plot_dimensionality_by_layer", fail)
    data = collect(sweep)
    data.geometry = _geometry_frame()
    ctx = ReportContext(
        data=data, settings=[], stats=ReportStats(settings={}), out_dir=tmp_path, n_resamples=N_RES, dpi=DPI
    )
    (sec,) = mechanism_sections(ctx)
    figs = {f.id: f for f in sec.figures}
    assert (
        figs["mech-clean-dim"].path is None
        and "ValueError: cannot draw layers" in figs["mech-clean-dim"].note
    )
    assert figs["mech-change-dim"].path is not None and figs["mech-change-dim"].path.exists()
    assert figs["mech-dim-vs-selectivity"].path is not None
    tables = {t.id: t for t in sec.tables}
    # no increase or gradient rows in this frame: the dimensionality, per-perturbation and Spearman tables
    assert list(tables) == ["mechanisms-dimensionality", "mechanisms-by-perturbation", "mechanisms-spearman"]
    table = tables["mechanisms-spearman"]
    # selectivity increases with alpha and so does the clean dimensionality: rho = 1 exactly
    row = table.data.set_index("measure").loc["clean PCA dimensionality"]
    assert (
        row["rho"] == pytest.approx(1.0)
        and row["n"] == 6
        and list(table.data.columns[-4:]) == ["ci_low", "ci_high", "n", "sign"]
    )


def test_the_runs_are_scanned_once(page, sweep):
    html, _, _, scans = page
    assert scans == [sweep]
    assert '<section id="robustness">' in html  # the robustness results came from that one scan


def test_build_sections_keeps_going_after_a_failure(sweep, tmp_path):
    ctx = ReportContext(data=collect(sweep), settings=[], stats=ReportStats(settings={}), out_dir=tmp_path)
    ok = SectionSpec("ok", "Fine", lambda _c: [Section(id="ok", heading="Fine", notes=["still here"])])
    out = build_sections(ctx, [SectionSpec("bad", "Bad", _broken_section), ok])
    assert [s.id for s in out] == ["bad", "ok"]
    assert re.match(r"This section could not be built: RuntimeError", out[0].notes[0]) and out[1].notes == [
        "still here"
    ]


def test_fewer_than_three_runs_per_alpha_is_said(page):
    from selectivity.report.section import small_sample_note

    assert small_sample_note([3, 5, 0]) is None  # 3 runs or more (or none): nothing to say
    note = small_sample_note([2, 3, 1])
    assert "only 1 or 2 run(s)" in note and "not meaningful" in note
    html = page[0]
    for sec in ("setting-resnet20", "robustness"):
        body = html[html.index(f'<section id="{sec}">') : html.index("</section>", html.index(f'id="{sec}"'))]
        assert "Some α have only 2 run(s) (fewer than 3)" in body, sec


def test_robustness_section_reads_like_paper_1(page, sweep):
    html, out, _, _ = page
    body = html[
        html.index('<section id="robustness">') : html.index("</section>", html.index('id="robustness"'))
    ]
    # settings as a definition list, epsilons in 1/255 units
    assert (
        "<dt>corruptions</dt><dd>gaussian_noise, fog</dd>" in body and "<dt>attacks</dt><dd>pgd</dd>" in body
    )
    # readable headers, percentages with CIs, yes/no: no snake_case header, no True/False
    headers = re.findall(r"<th>([^<]*)</th>", body)
    assert (
        "corruption accuracy" in headers and "PGD ε = 4/255" in headers and "Spearman ρ (95% CI)" in headers
    )
    assert not [h for h in headers if "_" in h]
    assert re.search(r"<td>\d+\.\d\d% \[\d+\.\d\d, \d+\.\d\d\]</td>", body)
    text = re.sub(r'src="data:[^"]*"', "", body)  # the text of the section, not the images' base64
    assert "True" not in text and "False" not in text and re.search(r"<td[^>]*>(yes|no)</td>", text)
    # the per-alpha means are the means of the stored per-run values
    runs = collect(sweep).robustness["summary"]
    by_alpha = pd.read_csv(out / "tables" / "robustness-by-alpha.csv")
    got = by_alpha[by_alpha.measure == "relative_corruption_accuracy"].set_index("alpha")["mean"]
    want = runs.groupby("alpha")["relative_corruption_accuracy"].mean()
    assert got.to_dict() == pytest.approx(want.to_dict())
    assert set(pd.read_csv(out / "tables" / "robustness-attacks-by-alpha.csv")["measure"]) == {
        "pgd_1/255",
        "pgd_2/255",
        "pgd_4/255",
    }
    # both the absolute and the relative measure are correlated with selectivity
    corr = pd.read_csv(out / "tables" / "robustness-correlations.csv")
    assert {"mean_corruption_accuracy", "relative_corruption_accuracy"} <= set(corr["measure"])
