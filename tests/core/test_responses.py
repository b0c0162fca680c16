"""The one reduction of a layer output to (N, units): each layout by hand, and every caller agrees."""

import pytest
import torch
from torch import nn

from selectivity import ActivationCapture, SelectivityRegularizer, batch_selectivity, measure_selectivity
from selectivity.core.metrics import class_means
from selectivity.core.metrics import unit_responses as metrics_unit_responses
from selectivity.core.responses import LayoutError, unit_responses
from selectivity.training.fused import FusedRuns


def test_conv_4d_is_the_spatial_mean():
    t = torch.arange(2 * 3 * 2 * 2, dtype=torch.float64).reshape(2, 3, 2, 2)
    r = unit_responses(t)  # layout inferred for 4-D
    assert r.shape == (2, 3)
    # sample 0, channel 1 holds 4, 5, 6, 7 -> 5.5
    assert r[0, 1].item() == 5.5
    assert torch.equal(r, unit_responses(t, "conv"))


def test_conv_3d_is_the_mean_over_positions_when_declared():
    t = torch.tensor([[[1.0, 2.0, 6.0], [0.0, 0.0, 3.0]]], dtype=torch.float64)  # (N=1, C=2, L=3)
    assert unit_responses(t, "conv").tolist() == [[3.0, 1.0]]


def test_units_pass_through_unchanged():
    t = torch.randn(5, 7)
    assert unit_responses(t) is t
    assert unit_responses(t, "units") is t
    with pytest.raises(LayoutError, match="'units' needs a 2-D"):
        unit_responses(torch.randn(5, 7, 2), "units")


def test_tokens_make_the_last_dimension_the_units():
    # (N=1, T=2, D=3): the units are the 3 neurons, pooled over the 2 tokens.
    t = torch.tensor([[[1.0, 0.0, 4.0], [3.0, 2.0, 0.0]]], dtype=torch.float64)
    assert unit_responses(t, "tokens").tolist() == [[2.0, 1.0, 2.0]]
    assert unit_responses(t, "tokens", pooling="cls").tolist() == [[1.0, 0.0, 4.0]]
    assert unit_responses(t, "tokens", pooling="max").tolist() == [[3.0, 2.0, 4.0]]


def test_tokens_mask_keeps_only_real_tokens():
    t = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [100.0, -50.0]]], dtype=torch.float64)  # token 2 is padding
    mask = torch.tensor([[1, 1, 0]])
    assert unit_responses(t, "tokens", mask=mask).tolist() == [[2.0, 1.0]]
    assert unit_responses(t, "tokens", pooling="max", mask=mask).tolist() == [[3.0, 2.0]]
    with pytest.raises(ValueError, match="padding mask of shape"):
        unit_responses(t, "tokens", mask=torch.ones(1, 2))


def test_channels_last_means_over_positions():
    # (N=1, H=1, W=2, C=3): C units.
    t = torch.tensor([[[[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]]]], dtype=torch.float64)
    assert unit_responses(t, "channels_last").tolist() == [[2.0, 3.0, 4.0]]


def test_undeclared_3d_output_is_a_one_line_error_saying_how_to_declare():
    with pytest.raises(LayoutError) as info:
        unit_responses(torch.randn(2, 16, 64), name="blocks.3.mlp.act")
    msg = str(info.value)
    assert "\n" not in msg
    assert 'layouts={"blocks.3.mlp.act": "tokens"}' in msg
    # the metrics say the same for an anonymous tensor
    with pytest.raises(LayoutError, match='layout="tokens"'):
        metrics_unit_responses(torch.randn(2, 16, 64))
    with pytest.raises(ValueError, match="unknown layout"):
        unit_responses(torch.randn(2, 3), "sequence")


# --------------------------------------------------------------------------- five callers
class Emit(nn.Module):
    """Input -> a named site (identity) -> flattened linear head with 2 outputs."""

    def __init__(self, numel: int) -> None:
        super().__init__()
        self.site = nn.Identity()
        self.head = nn.Linear(numel, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.site(x).flatten(1))


CASES = {
    "conv4d": ((6, 3, 5, 3), "conv"),  # HW = 15: sum * (1/15) and sum / 15 differ in the last bit
    "conv3d": ((6, 3, 7), "conv"),
    "units": ((6, 5), None),
    "tokens": ((6, 7, 4), "tokens"),
    "channels_last": ((6, 3, 5, 4), "channels_last"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_all_five_callers_give_identical_responses(case):
    shape, layout = CASES[case]
    g = torch.Generator().manual_seed(0)
    t = torch.rand(shape, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    ref = unit_responses(t, layout)  # (N, U)
    layouts = None if layout is None else {"site": layout}
    model = Emit(t[0].numel()).double()

    # 1. metrics
    assert torch.equal(metrics_unit_responses(t, layout), ref)
    means, counts = class_means(t, y, 2, layout=layout)
    assert torch.equal(means, class_means(ref, y, 2)[0])
    # 2. hooks
    with ActivationCapture(model, "site", layouts=layouts, detach=True) as cap:
        model(t)
        assert torch.equal(cap.outputs["site"], ref)
    # 3. regulariser: its term equals the term of the reference responses, bit for bit
    with SelectivityRegularizer(model, alpha=1.0, num_classes=2, layers="site", layouts=layouts) as reg:
        model(t)
        got = reg.selectivity(y)
    expected, _ = batch_selectivity([ref], y, num_classes=2)
    assert torch.equal(got.detach(), expected)
    # 4. measurement (one batch: the same float64 sums in the same order)
    rep = measure_selectivity(model, [(t, y)], num_classes=2, layers="site", layouts=layouts, top_n=None)
    assert torch.equal(rep.layers[0].class_means, means)
    # 5. fused runs
    group = FusedRuns([model], alphas=[1.0], num_classes=2, lr=0.1, layers="site", layouts=layouts)
    _, r = group.forward(t.unsqueeze(0))  # (R=1, N, U)
    assert torch.equal(r[0].detach(), ref)
