"""No string from a run directory reaches the report page unescaped (synthetic records, ~10 s).

Covers every section, the Robustness section (paper 2) included: its corruption and attack
names, settings and run ids come from each run's robustness.json.
"""

import re

import numpy as np
from markupsafe import escape

from selectivity.report import build_report
from selectivity.run.config import make_config
from selectivity.run.files import write_json

# One marker per field a run directory can hold; each would open a script element if
# it reached the page raw. Run directory names cannot hold "/", so no closing tag there.
MARK = {
    "status": "<script>alert('status')</script>",
    "message": "<script>alert('message')</script>",
    "config": "<script>alert('config')</script>",
    "model": "<script>model",
    "run_dir": "<script>run-dir",
    "layer": "<script>alert('layer')</script>",
    "meta": "<script>alert('meta')</script>",
    "spec": "<script>alert('spec')</script>",
    # robustness.json (paper 2): names of the cells, and free text in the settings
    "corruption": "<script>alert('corruption')</script>",
    "attack": "<script>alert('attack')</script>",
    "rob_settings": "<script>alert('rob_settings')</script>",
}

TEMPLATE_TAGS = set(
    "html head meta title style body main h1 h2 h3 h4 p code ul li nav a b section div "
    "table thead tbody tr th td figure img figcaption span dl dt dd".split()
)


def _hostile_robustness(rng) -> dict:
    """A robustness.json whose names and settings hold markers (as `selectivity robustness` writes)."""
    cells = [
        {"corruption": MARK["corruption"], "severity": sev, "accuracy": float(rng.uniform(0.3, 0.6))}
        for sev in (1, 5)
    ]
    attacks = [
        {"attack": MARK["attack"], "norm": "linf", "epsilon": eps, "accuracy": float(rng.uniform(0.0, 0.5))}
        for eps in (1 / 255, 4 / 255)
    ]
    clean = float(rng.uniform(0.7, 0.9))
    mean = float(np.mean([c["accuracy"] for c in cells]))
    return dict(
        settings={
            "corruptions": [MARK["corruption"]],
            "attacks": [MARK["attack"]],
            "source": MARK["rob_settings"],
        },
        n_images=40,
        clean_accuracy=clean,
        corruptions=cells,
        n_corruption_cells=len(cells),
        mean_corruption_accuracy=mean,
        relative_corruption_accuracy=mean / clean,
        attacks=attacks,
    )


def _hostile_sweep(root):
    rng = np.random.default_rng(0)
    runs = []
    for alpha in (-1.0, 0.0, 1.0):
        for seed in (0, 1):
            runs.append((f"{MARK['run_dir']}_a{alpha:+g}_s{seed}", alpha, seed, "completed", None))
    runs.append((f"{MARK['run_dir']}_failed", 0.0, 2, "failed", MARK["message"]))
    runs.append((f"{MARK['run_dir']}_odd", 1.0, 3, MARK["status"], MARK["message"]))
    for rid, alpha, seed, status, message in runs:
        cfg = make_config("smoke", dict(alpha=alpha, seed=seed)).to_dict()
        # A hostile model name makes the config invalid: that run is read as damaged, and the
        # report lists it with the file and the reason (which quote the hostile values).
        model = MARK["model"] if rid.endswith("_odd") else "resnet20"
        cfg.update(model=model, selectivity_layers=[MARK["config"]])
        d = root / "runs" / rid
        write_json(d / "config.json", cfg)
        write_json(d / "meta.json", {"seed": seed, "hostname": MARK["meta"], "git_revision": MARK["meta"]})
        layers = [
            dict(
                layer=f"{MARK['layer']}{i}", units=8, selectivity=float(rng.uniform(0.1, 0.3)), precision=0.2
            )
            for i in range(3)
        ]
        write_json(
            d / "result.json",
            dict(
                status=status,
                message=message,
                test_accuracy=float(0.8 + 0.01 * alpha + rng.normal(0, 0.01)),
                mean_selectivity=float(np.mean([l["selectivity"] for l in layers])),
                mean_precision=0.2,
                dead_fraction=0.0,
                layers=layers,
            ),
        )
        if status == "completed":
            write_json(d / "robustness.json", _hostile_robustness(rng))
    write_json(root / "sweep.json", {"spec": {"preset": MARK["spec"], "overrides": {"x": MARK["spec"]}}})
    return root


def test_every_run_dir_field_is_escaped(tmp_path):
    sweep = _hostile_sweep(tmp_path / "sweep")
    page = build_report(sweep, tmp_path / "out", n_resamples=20, dpi=30).read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert '<section id="robustness">' in page and "<!--" not in page
    # Each field did reach the page, escaped by the template (so the test checks something):
    # robustness rows carry the run ids (summary table), the attack names (the measures of the
    # test and correlation tables, and the figure titles) and the settings (the caption).
    fields = ("status", "message", "config", "model", "run_dir", "meta", "spec")
    for field in (*fields, "corruption", "attack", "rob_settings"):
        assert str(escape(MARK[field])) in page, field
    assert str(escape(f"{MARK['attack'].upper()} ε = 4/255")) in page  # a measure of the statistics tables
    assert str(escape(f"Accuracy under {MARK['attack'].upper()} vs ε")) in page  # a figure title
    section = page[
        page.index('<section id="robustness">') : page.index("</section>", page.index('id="robustness"'))
    ]
    assert str(escape(MARK["run_dir"])) in section and str(escape(MARK["rob_settings"])) in section
    # Layer names only go to the CSV tables; none reaches the page in any form.
    assert "alert(&#39;layer&#39;)" not in page and MARK["layer"] not in page
    # Only the template's own elements are on the page.
    tags = set(re.findall(r"<([a-zA-Z][a-zA-Z0-9]*)", page))
    assert tags <= TEMPLATE_TAGS, tags - TEMPLATE_TAGS
