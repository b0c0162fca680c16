"""Per-unit records (one row per unit, most-activating samples) and the gallery's unit choice."""

import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from helpers import RUN_A
from selectivity import measure_selectivity
from selectivity.cli import main
from selectivity.evaluate.units import (
    gallery_images,
    gallery_units,
    top_frame,
    unit_frame,
    write_unit_records,
)

# Identity -> ReLU: the units' responses are the inputs themselves (x >= 0).
X = torch.tensor([[2.0, 0.0, 1.0], [4.0, 1.0, 1.0], [0.0, 3.0, 1.0], [1.0, 1.0, 1.0]])
Y = torch.tensor([0, 0, 1, 1])
# By hand: unit 0 class means 3, 0.5 -> SI 5/7, prefers class 0;
#          unit 1 class means 0.5, 2 -> SI 3/5, prefers class 1;
#          unit 2 class means 1, 1 -> SI 0.
# Most-activating samples: unit 0: 1 (4.0), 0 (2.0); unit 1: 2 (3.0), then 1 or 3 (1.0).


@pytest.fixture(scope="module")
def report():
    net = nn.Sequential(nn.Linear(3, 3, bias=False), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(3))
    batches = [(X[:2], Y[:2]), (X[2:], Y[2:])]  # streamed in two batches
    return measure_selectivity(net, batches, 2, layers="1", top_n=2, top_k=2)


def test_unit_frame_has_one_hand_checked_row_per_unit(report):
    df = unit_frame(report, class_names=["cat", "dog"])
    assert list(df.unit) == [0, 1, 2] and set(df.layer) == {"1"}
    assert df.selectivity.tolist() == pytest.approx([5 / 7, 3 / 5, 0.0])
    assert df.preferred_class.tolist()[:2] == [0, 1] and df.preferred_name.tolist()[:2] == ["cat", "dog"]
    assert df.mean_cat.tolist() == pytest.approx([3.0, 0.5, 1.0])
    assert df.mean_dog.tolist() == pytest.approx([0.5, 2.0, 1.0])
    assert not df.dead.any()
    # precision over each unit's top 2: unit 0's are both class 0
    assert df.precision[0] == pytest.approx(1.0)


def test_top_frame_lists_each_units_most_activating_samples(report):
    df = top_frame(report)
    assert len(df) == 3 * 2
    u0 = df[df.unit == 0].sort_values("rank")
    assert u0["sample"].tolist() == [1, 0] and u0.value.tolist() == [4.0, 2.0]
    u1 = df[df.unit == 1].sort_values("rank")
    assert u1["sample"].tolist()[0] == 2 and u1.value.tolist() == [3.0, 1.0]
    assert (df.token == -1).all()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_records_round_trip(report, tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    written = write_unit_records(report, tmp_path, class_names=["cat", "dog"], fmt=fmt)
    assert {p.name for p in written.values()} == {f"units.{fmt}", f"top_samples.{fmt}"}

    def read(path):  # layer names are text ("1" is a module name, not a number)
        return pd.read_csv(path, dtype={"layer": str}) if fmt == "csv" else pd.read_parquet(path)

    back = read(written["units"])
    pd.testing.assert_frame_equal(back, unit_frame(report, ["cat", "dog"]), check_dtype=False)
    assert len(read(written["top_samples"])) == 6


def test_gallery_picks_most_and_least_selective_live_units(report):
    g = gallery_units(report, n=1, k=2)
    (most,), (least,) = g["1"]["most"], g["1"]["least"]
    assert (most.unit, most.preferred_class, most.samples) == (0, 0, [1, 0])
    assert least.unit == 2 and least.selectivity == pytest.approx(0.0)
    with pytest.raises(ValueError, match="top_k >= 9"):
        gallery_units(report, k=9)
    with pytest.raises(ValueError, match="no measured layer"):
        gallery_units(report, ["nope"], k=2)


def test_cli_measure_writes_unit_records(tiny_sweep, tiny_data, tmp_path):
    out = tmp_path / "units"
    args = ["measure", str(tiny_sweep.path / "runs" / RUN_A), "--data", str(tiny_data)]
    r = CliRunner().invoke(
        main, [*args, "--units", str(out), "--top-k", "3", "--format", "csv", "--top-n", "5"]
    )
    assert r.exit_code == 0, r.output
    units = pd.read_csv(out / "units.csv")
    top = pd.read_csv(out / "top_samples.csv")
    assert len(units) == units.groupby("layer").unit.count().sum() and units.layer.nunique() == 19
    assert len(top) == 3 * len(units)
    assert {"mean_airplane", "mean_truck", "preferred_name", "precision"} <= set(units.columns)
    # top samples are indices into the 80 measured test images
    assert top["sample"].between(0, 79).all()


def test_gallery_images_and_plot(report):
    from selectivity.data import ImageDataset
    from selectivity.plots.units import draw_unit_gallery

    images = torch.arange(4, dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 3, 2, 2).contiguous()
    ds = ImageDataset(images, Y.clone(), ["cat", "dog"], "toy")  # sample i is filled with value i
    data = gallery_images(gallery_units(report, n=1, k=2), ds)["1"]
    assert data["images"].shape == (2, 2, 3, 2, 2)
    assert data["images"][0, :, 0, 0, 0].tolist() == [1, 0]  # unit 0's top samples 1, 0
    assert data["tile_labels"][0] == ["cat", "cat"] and "-> cat" in data["row_labels"][0]
    ax = draw_unit_gallery(data["images"], data["row_labels"], data["tile_labels"], title="layer 1")
    assert [t.get_text() for t in ax.get_yticklabels()] == data["row_labels"]
    assert len(ax.texts) == 4 and ax.get_title() == "layer 1"
