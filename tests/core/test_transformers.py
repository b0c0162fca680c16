"""Transformers: per-neuron units of (N, T, D) outputs, pooling, padding masks, token labels,
input sites, the regulariser's gradient, and streaming memory; on hand-built networks."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from helpers import peak_tensor_bytes
from selectivity import (
    ActivationCapture,
    SelectivityRegularizer,
    batch_selectivity,
    class_selectivity_index,
    measure_selectivity,
    precision,
    sites,
)
from selectivity.core.measure import IGNORE_INDEX
from selectivity.models.vit import Block, ViT

C = 4  # classes (a power of two: the class means below are exact)
T = 4  # real tokens per sample
EXTRA = 2  # neurons that respond the same to every input
WIDTH = C + EXTRA  # MLP width: the number of units
FILLER = C  # token id whose embedding is 0


class HandTransformer(nn.Module):
    """Embedding -> a pre-norm transformer block (ReLU MLP) -> linear head on token 0.

    Token c < C embeds as the one-hot e_c, the filler token as 0. The attention's output
    projection is 0, so every token keeps its embedding; LayerNorm of e_c is positive
    only at c, of 0 is 0. MLP neuron j < C is ReLU(LN(x)_j): it fires only on token j.
    Neurons C, C+1 have weight 0 and bias 1: a response of 1 everywhere.
    """

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(C + 1, C)
        self.block = Block(C, 1, WIDTH, nn.ReLU())
        self.head = nn.Linear(C, C)
        with torch.no_grad():
            self.embed.weight.copy_(torch.cat([torch.eye(C), torch.zeros(1, C)]))
            self.block.attn.proj.weight.zero_()
            self.block.attn.proj.bias.zero_()
            self.block.mlp.fc1.weight.copy_(torch.cat([torch.eye(C), torch.zeros(EXTRA, C)]))
            self.block.mlp.fc1.bias.copy_(torch.cat([torch.zeros(C), torch.ones(EXTRA)]))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.block(self.embed(input_ids))[:, 0])


SITE = "block.mlp.act"
TOKENS = {SITE: "tokens"}


def _samples(n_per_class=3, seed=0):
    """Class-c samples: token 0 is c, the other tokens filler. Labels (N,)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(C).repeat(n_per_class)
    ids = torch.full((len(y), T), FILLER)
    ids[:, 0] = y
    perm = torch.randperm(len(y), generator=g)
    return ids[perm], y[perm]


@pytest.fixture(scope="module")
def hand():
    return HandTransformer().double().eval()


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_neuron_j_fires_only_for_class_j_has_si_exactly_one(hand, pooling):
    ids, y = _samples()
    rep = measure_selectivity(hand, [(ids, y)], C, layers=SITE, layouts=TOKENS, pooling=pooling, top_n=3)
    (layer,) = rep.layers
    assert layer.num_units == WIDTH  # the MLP neurons, not the T tokens
    si = layer.selectivity
    assert si.dtype == torch.float64
    assert torch.equal(si[:C], torch.ones(C, dtype=torch.float64))
    assert torch.equal(si[C:], torch.zeros(EXTRA, dtype=torch.float64))
    assert torch.equal(layer.preferred_class[:C], torch.arange(C))
    assert not layer.dead.any()
    assert rep.accuracy is not None


def test_the_model_declares_nothing_so_undeclared_3d_is_a_one_line_error(hand):
    ids, y = _samples()
    with pytest.raises(ValueError, match=r"layouts=\{\"block.mlp.act\": \"tokens\"\}") as info:
        measure_selectivity(hand, [(ids, y)], C, layers=SITE)
    assert "\n" not in str(info.value)


def test_max_pooling_counts_the_largest_token(hand):
    ids, y = _samples()
    rep = measure_selectivity(hand, [(ids, y)], C, layers=SITE, layouts=TOKENS, pooling="max", top_n=None)
    assert torch.equal(rep.layers[0].selectivity[:C], torch.ones(C, dtype=torch.float64))


@pytest.mark.parametrize("pooling", ["mean", "max", "cls"])
def test_appended_padding_with_mask_zero_changes_no_number(hand, pooling):
    ids, y = _samples(n_per_class=4, seed=1)
    plain = measure_selectivity(
        hand, [(ids, y)], C, layers=SITE, layouts=TOKENS, pooling=pooling, top_n=5, top_k=3
    )
    # Pad with class tokens of other classes (they would fire other neurons) under mask 0.
    pad = (y.unsqueeze(1) + torch.arange(1, 4)) % C  # (N, 3)
    padded_ids = torch.cat([ids, pad], dim=1)
    mask = torch.cat([torch.ones_like(ids), torch.zeros_like(pad)], dim=1)
    batch = {"input_ids": padded_ids, "attention_mask": mask}
    padded = measure_selectivity(
        hand, [(batch, y)], C, layers=SITE, layouts=TOKENS, pooling=pooling, top_n=5, top_k=3
    )
    a, b = plain.layers[0], padded.layers[0]
    for field in ("selectivity", "precision", "dead", "class_means", "top_values", "top_samples"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert plain.accuracy == padded.accuracy
    # the mask is what keeps them equal: without it the padding changes the numbers
    unmasked = measure_selectivity(
        hand, [(padded_ids, y)], C, layers=SITE, layouts=TOKENS, pooling=pooling, top_n=5
    )
    if pooling != "cls":
        assert not torch.equal(unmasked.layers[0].class_means, a.class_means)


def test_token_labels_equal_the_tokens_flattened_by_hand(hand):
    g = torch.Generator().manual_seed(2)
    n = 10
    ids = torch.randint(0, C + 1, (n, T), generator=g)
    labels = torch.randint(0, C, (n, T), generator=g)
    labels[torch.rand(n, T, generator=g) < 0.3] = IGNORE_INDEX
    rep = measure_selectivity(
        hand, [(ids[:4], labels[:4]), (ids[4:], labels[4:])], C, layers=SITE, layouts=TOKENS, top_n=6
    )
    assert rep.token_level and rep.num_samples == int((labels != IGNORE_INDEX).sum())
    # by hand: every labelled token's raw response as one sample
    with ActivationCapture(hand, SITE, reduce=lambda t: t, detach=True) as cap:
        hand(ids)
        raw = cap.outputs[SITE]  # (N, T, WIDTH)
    keep = labels != IGNORE_INDEX
    flat, flat_y = raw[keep], labels[keep]  # (M, WIDTH), (M,)
    layer = rep.layers[0]
    torch.testing.assert_close(
        layer.selectivity, class_selectivity_index(flat, flat_y, C), rtol=0, atol=1e-15
    )
    torch.testing.assert_close(layer.precision, precision(flat, flat_y, C, top_n=6), rtol=0, atol=1e-15)
    assert layer.num_units == WIDTH


def test_token_labels_refuse_a_conv_layer():
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    x, y = torch.rand(3, 1, 2, 2), torch.zeros(3, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="token-level labels"):
        measure_selectivity(net, [(x, y)], 2, layers="1")


def test_input_site_records_a_modules_input(hand):
    ids, y = _samples()
    with ActivationCapture(
        hand, "block.mlp.fc2", sites="input", layouts="tokens", pooling="cls", detach=True
    ) as cap:
        hand(ids)
        got = cap.outputs["block.mlp.fc2"]
    with ActivationCapture(hand, SITE, layouts="tokens", pooling="cls", detach=True) as cap:
        hand(ids)
        act = cap.outputs[SITE]
    assert torch.equal(got, act)  # fc2's input is the activation's output


def test_a_layer_that_never_runs_is_an_error_naming_it():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.act = nn.GELU()  # defined but not used: forward calls F.gelu
            self.head = nn.Linear(3, 2)

        def forward(self, x):
            return self.head(F.gelu(self.fc(x)))

    net = Functional()
    x, y = torch.rand(4, 3), torch.tensor([0, 1, 0, 1])
    with pytest.raises(RuntimeError, match="layer 'act' never ran"):
        measure_selectivity(net, [(x, y)], 2)
    with pytest.raises(RuntimeError, match="never ran"):
        with SelectivityRegularizer(net, alpha=1.0, num_classes=2) as reg:
            net(x)
            reg.penalty(y)


def test_default_discovery_recognises_activation_classes_of_other_libraries():
    class GELUActivation(nn.Module):  # as Hugging Face names it; not an nn.GELU
        def forward(self, x):
            return F.gelu(x)

    net = nn.Sequential(nn.Linear(3, 5), GELUActivation(), nn.Linear(5, 2))
    with ActivationCapture(net) as cap:
        assert cap.layer_names == ["1"]
    table = sites(net, torch.rand(2, 3))
    (infos,) = table.values()
    assert [(i.name, i.activation, i.output_shape) for i in infos] == [
        ("0", False, (2, 5)),
        ("1", True, (2, 5)),
        ("2", False, (2, 2)),
    ]


# --------------------------------------------------------------------------- regulariser
def _smooth_transformer(seed=0):
    torch.manual_seed(seed)
    net = HandTransformer().double()
    net.block.mlp.act = nn.GELU()  # smooth, signed: the shift rule's path
    for p in net.parameters():
        p.data.add_(0.3 * torch.randn_like(p))
    return net


def test_regulariser_gradient_equals_finite_differences_on_a_transformer():
    net = _smooth_transformer()
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, C + 1, (8, T), generator=g)
    y = torch.arange(8) % C
    w0 = net.block.mlp.fc1.weight.detach().clone()
    reg = SelectivityRegularizer(net, alpha=1.0, num_classes=C, layers=SITE, layouts=TOKENS, eps=1e-6)

    def term(w):
        with reg:
            functional_call(net, {"block.mlp.fc1.weight": w}, (ids,))
            return reg.selectivity(y)

    assert torch.autograd.gradcheck(term, (w0.requires_grad_(),), eps=1e-6, atol=1e-7)


def test_regulariser_penalty_is_over_the_d_neurons_not_the_tokens():
    net = _smooth_transformer(seed=1)
    ids = torch.randint(0, C + 1, (12, T), generator=torch.Generator().manual_seed(4))
    y = torch.arange(12) % C
    with ActivationCapture(net, SITE, reduce=lambda t: t, detach=True) as cap:
        net(ids)
        raw = cap.outputs[SITE]  # (N, T, D)
    assert raw.shape == (12, T, WIDTH)
    with SelectivityRegularizer(net, alpha=2.0, num_classes=C, layers=SITE, layouts=TOKENS) as reg:
        net(ids)
        pen = reg.penalty(y)
    over_neurons, _ = batch_selectivity([raw.mean(dim=1)], y, C)  # (N, D): D units
    over_tokens, _ = batch_selectivity([raw.mean(dim=2)], y, C)  # (N, T): what a wrong rule gives
    torch.testing.assert_close(pen.detach(), -2.0 * over_neurons, rtol=1e-12, atol=0)
    assert abs(over_neurons - over_tokens) > 1e-3


# --------------------------------------------------------------------------- memory
def _stream(model_input, n_batches, batch=8, seed=0):
    def gen():
        g = torch.Generator().manual_seed(seed)
        for _ in range(n_batches):
            x = model_input(g, batch)
            yield x, torch.randint(0, C, (batch,), generator=g)

    return gen


@pytest.mark.parametrize("which", ["hand", "vit"])
def test_streaming_memory_does_not_grow_with_n(which):
    if which == "hand":
        model = HandTransformer().eval()
        kw = dict(layers=SITE, layouts=TOKENS)
        units = WIDTH

        def make(g, b):
            return torch.randint(0, C + 1, (b, T), generator=g)
    else:
        torch.manual_seed(0)
        model = ViT(num_classes=C, image_size=8, patch_size=4, dim=16, depth=2, heads=2).eval()
        kw = {}
        units = 2 * 32

        def make(g, b):
            return torch.rand(b, 3, 8, 8, generator=g)

    def run(n):
        return lambda: measure_selectivity(model, _stream(make, n, batch=4)(), C, top_n=4, top_k=2, **kw)

    run(2)()  # warm-up: one-time allocations (thread pools, caches) do not count
    small, large = peak_tensor_bytes(run(3)), peak_tensor_bytes(run(12))
    # 4x the samples, the same peak: keeping the responses of the 36 additional samples
    # would need at least 36 * units * 4 bytes more (float32), far above the 64-byte slack.
    assert large <= small + 64, (small, large)
    assert 36 * units * 4 > 64


def test_timm_presets_name_the_same_sites_as_the_built_in_models():
    from selectivity import family_preset
    from selectivity.core.hooks import resolve_sites
    from selectivity.models import create

    vit = create("vit_tiny")
    got = resolve_sites(vit, **family_preset("timm-vit"))
    assert [s.name for s in got] == vit.default_selectivity_layers()
    assert {s.layout for s in got} == {"tokens"}
    resnet = create("resnet18")  # timm's ResNet names its activations the same way
    got = resolve_sites(resnet, **family_preset("timm-resnet"))
    assert [s.name for s in got] == resnet.default_selectivity_layers()


def test_regulariser_ignores_padding_under_the_mask():
    torch.manual_seed(2)
    net = HandTransformer().double()  # attention output 0: no token sees another
    net.block.mlp.act = nn.GELU()
    for p in net.block.mlp.fc1.parameters():
        p.data.add_(0.3 * torch.randn_like(p))
    ids, y = _samples(n_per_class=2, seed=5)
    pad = torch.full((len(y), 2), 1)  # a class token: it would change every pooled response
    padded = torch.cat([ids, pad], dim=1)
    mask = torch.cat([torch.ones_like(ids), torch.zeros_like(pad)], dim=1)
    with SelectivityRegularizer(net, alpha=1.0, num_classes=C, layers=SITE, layouts=TOKENS) as reg:
        net(ids)
        plain = reg.selectivity(y)
        net(padded, attention_mask=mask)  # the mask found in the forward's keyword arguments
        by_kwarg = reg.selectivity(y)
        reg.mask = mask  # or set explicitly
        net(padded)
        by_attr = reg.selectivity(y)
        reg.mask = None
        net(padded)
        unmasked = reg.selectivity(y)
    torch.testing.assert_close(by_kwarg, plain, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(by_attr, plain, rtol=1e-12, atol=1e-14)
    assert abs(float((unmasked - plain).detach())) > 1e-6
