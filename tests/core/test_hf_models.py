"""Real Hugging Face model classes (BERT, ViT, GPT-2, Llama) from tiny configs, offline:
measured and regularised with the family presets, units = the MLP width."""

import os

import pytest
import torch
import torch.nn.functional as F

from helpers import peak_tensor_bytes

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded: models come from configs
transformers = pytest.importorskip("transformers")

from selectivity import (  # noqa: E402
    ActivationCapture,
    SelectivityRegularizer,
    family_preset,
    measure_selectivity,
    sites,
)

WIDTH = 24  # MLP (intermediate) width of every tiny model: the units per layer
LAYERS = 2
CLASSES = 3
VOCAB = 40
SMALL = dict(num_hidden_layers=LAYERS, num_attention_heads=2, intermediate_size=WIDTH)


def _bert():
    cfg = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=16, max_position_embeddings=32, num_labels=CLASSES, **SMALL
    )
    return transformers.BertForSequenceClassification(cfg)


def _vit():
    cfg = transformers.ViTConfig(image_size=8, patch_size=4, hidden_size=16, num_labels=CLASSES, **SMALL)
    return transformers.ViTForImageClassification(cfg)


def _gpt2():
    cfg = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=16, n_layer=LAYERS, n_head=2, n_inner=WIDTH, n_positions=32
    )
    return transformers.GPT2LMHeadModel(cfg)


def _llama():
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, num_key_value_heads=2, max_position_embeddings=32, **SMALL
    )
    return transformers.LlamaForCausalLM(cfg)


FAMILIES = {"hf-bert": _bert, "hf-vit": _vit, "gpt2": _gpt2, "llama": _llama}


def _batch(family, n=6, t=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    if family == "hf-vit":
        return {"pixel_values": torch.rand(n, 3, 8, 8, generator=g, dtype=torch.float64)}
    ids = torch.randint(0, VOCAB, (n, t), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.fixture(scope="module")
def models():
    out = {}
    for name, make in FAMILIES.items():
        torch.manual_seed(0)
        out[name] = make().double().eval()
    return out


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_measure_units_are_the_mlp_width(models, family):
    model = models[family]
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    rep = measure_selectivity(model, [(_batch(family), y)], CLASSES, top_n=2, **family_preset(family))
    assert len(rep.layers) == LAYERS
    assert [l.num_units for l in rep.layers] == [WIDTH] * LAYERS
    for layer in rep.layers:
        ok = ~torch.isnan(layer.selectivity)
        assert ok.all() and ((layer.selectivity >= 0) & (layer.selectivity <= 1)).all()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_regularise_each_family(models, family):
    model = models[family]
    batch, y = _batch(family, seed=1), torch.tensor([0, 1, 2, 0, 1, 2])
    model.zero_grad(set_to_none=True)
    with SelectivityRegularizer(model, alpha=-1.0, num_classes=CLASSES, **family_preset(family)) as reg:
        out = model(**batch)
        _, per_layer = reg.selectivity(y, per_layer=True)
        pen = reg.penalty(y)
        assert len(per_layer) == LAYERS
        (pen + 0 * out.logits.sum()).backward()
    assert torch.isfinite(pen)
    # the gradient reaches the first MLP projection of every layer
    mlp_in = [
        p
        for n, p in model.named_parameters()
        if n.endswith(("intermediate.dense.weight", "mlp.c_fc.weight", "gate_proj.weight", "mlp.fc1.weight"))
    ]
    assert len(mlp_in) == LAYERS and all(p.grad is not None and p.grad.abs().sum() > 0 for p in mlp_in)


def test_llama_site_is_the_swiglu_neuron_input_of_down_proj(models):
    model = models["llama"]
    batch = _batch("llama", seed=2)
    mlp = model.model.layers[0].mlp
    with ActivationCapture(
        model, "model.layers.0.mlp", sites="input", reduce=lambda t: t, detach=True
    ) as cap:
        model(**batch)
        h = cap.outputs["model.layers.0.mlp"]  # (N, T, 16), the MLP's input
    with ActivationCapture(model, detach=True, **family_preset("llama")) as cap:
        model(**batch)
        got = cap.outputs["model.layers.0.mlp.down_proj"]  # (N, WIDTH), mean over tokens
    neuron = mlp.act_fn(mlp.gate_proj(h)) * mlp.up_proj(h)  # (N, T, WIDTH)
    torch.testing.assert_close(got, neuron.mean(dim=1), rtol=1e-12, atol=1e-12)


def test_gpt2_token_labels_and_bert_padding(models):
    # GPT-2: every labelled token a sample (tagging), -100 on the others
    g = torch.Generator().manual_seed(3)
    batch = _batch("gpt2", n=4, t=6, seed=3)
    labels = torch.randint(0, CLASSES, (4, 6), generator=g)
    labels[:, -1] = -100
    rep = measure_selectivity(models["gpt2"], [(batch, labels)], CLASSES, top_n=3, **family_preset("gpt2"))
    assert rep.token_level and rep.num_samples == 20
    assert [l.num_units for l in rep.layers] == [WIDTH] * LAYERS
    # BERT: appended padding with attention_mask 0 changes no measured number (float64)
    bert, y = models["hf-bert"], torch.tensor([0, 1, 2, 0, 1, 2])
    plain = _batch("hf-bert", seed=4)
    pad = torch.randint(0, VOCAB, (6, 3), generator=g)
    padded = {
        "input_ids": torch.cat([plain["input_ids"], pad], dim=1),
        "attention_mask": torch.cat([plain["attention_mask"], torch.zeros_like(pad)], dim=1),
    }
    a = measure_selectivity(bert, [(plain, y)], CLASSES, top_n=2, **family_preset("hf-bert"))
    b = measure_selectivity(bert, [(padded, y)], CLASSES, top_n=2, **family_preset("hf-bert"))
    for la, lb in zip(a.layers, b.layers):
        torch.testing.assert_close(la.class_means, lb.class_means, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(la.selectivity, lb.selectivity, rtol=1e-9, atol=1e-10)


def test_sites_lists_the_mlp_activation_with_its_shape(models):
    table = sites(models["gpt2"], _batch("gpt2", n=2, t=3))
    block = table["transformer.h.0"]
    act = [i for i in block if i.name == "transformer.h.0.mlp.act"]
    assert act and act[0].activation and act[0].output_shape == (2, 3, WIDTH)


def test_measuring_a_hf_model_streams_with_memory_independent_of_n(models):
    model = models["hf-bert"]

    def run(n):
        def go():
            def gen():
                for i in range(n):
                    yield _batch("hf-bert", n=2, t=4, seed=i), torch.tensor([i % CLASSES, (i + 1) % CLASSES])

            measure_selectivity(model, gen(), CLASSES, top_n=2, top_k=2, **family_preset("hf-bert"))

        return go

    run(2)()  # warm-up
    small, large = peak_tensor_bytes(run(3)), peak_tensor_bytes(run(12))
    assert large <= small + 64, (small, large)  # keeping 18 more samples' responses: 18*48*8 bytes


def test_training_step_with_penalty_changes_selectivity_direction(models):
    """A few steps of CE - alpha * SI on BERT move the minibatch SI the way alpha says."""
    torch.manual_seed(0)
    batch, y = _batch("hf-bert", n=12, seed=5), torch.arange(12) % CLASSES
    results = {}
    for alpha in (-5.0, 5.0):
        model = _bert().double().train()
        model.config.hidden_dropout_prob = 0.0
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        with SelectivityRegularizer(model, alpha, CLASSES, **family_preset("hf-bert")) as reg:
            for _ in range(8):
                out = model(**batch)
                loss = F.cross_entropy(out.logits, y) + reg.penalty(y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            model(**batch)
            results[alpha] = float(reg.selectivity(y).detach())
    assert results[5.0] > results[-5.0]
