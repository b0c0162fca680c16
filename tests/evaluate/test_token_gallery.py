"""The unit gallery of token data: each unit's top tokens (sequence, position) in context, on a
hand-weighted token network whose neuron j fires only on word j; the HTML page escapes tokens."""

import re

import pytest
import torch
from torch import nn

import selectivity
from selectivity import measure_selectivity
from selectivity.core.measure import IGNORE_INDEX
from selectivity.evaluate.tokens import token_gallery
from selectivity.evaluate.units import GalleryUnit, gallery_units
from selectivity.report.tokens import token_gallery_html, write_token_gallery

VOCAB = ["the", "cat", "sat", "on", "a", "mat", "<script>alert(1)</script>"]
ID = {w: i for i, w in enumerate(VOCAB)}
U = len(VOCAB)  # one neuron per word
NOUNS = {"cat", "mat", "<script>alert(1)</script>"}  # class 1; every other word class 0
CAT = ID["cat"]
SCRIPT = ID["<script>alert(1)</script>"]


class WordNet(nn.Module):
    """Neuron j responds (t + 1) to word j at position t, 0 to any other word.

    The embedding is the identity (row j = e_j), scaled by t + 1: the most-activating
    tokens of a neuron are its word's latest occurrences, each response distinct within
    a sequence and exact in float64.
    """

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(U, U)
        self.act = nn.ReLU()
        with torch.no_grad():
            self.embed.weight.copy_(torch.eye(U))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        scale = torch.arange(1, input_ids.shape[1] + 1, dtype=self.embed.weight.dtype)  # (T,)
        return self.act(self.embed(input_ids) * scale[:, None])  # (N, T, U)


# Three sequences of 8 tokens; "cat" pads the first two (mask 0, label -100): counted, the
# padding would be the top tokens of the cat neuron (responses 7, 8). In sequence 2 the
# "cat" at position 6 is labelled -100 (a sub-word continuation): counted, it would rank 2nd.
WORDS = [
    "the cat sat on the mat cat cat".split(),
    "on the mat sat the cat cat cat".split(),
    ["cat", "the", "on", VOCAB[SCRIPT], "mat", "sat", "cat", "cat"],  # a word that is markup
]
REAL = [6, 6, 8]  # real tokens per sequence
IDS = torch.tensor([[ID[w] for w in s] for s in WORDS])  # (3, 8)
MASK = torch.tensor([[1] * r + [0] * (8 - r) for r in REAL])  # (3, 8)
LABELS = torch.tensor([[int(w in NOUNS) for w in s] for s in WORDS])  # (3, 8)
LABELS[MASK == 0] = IGNORE_INDEX
LABELS[2, 6] = IGNORE_INDEX
# By hand, the cat neuron's labelled tokens: (2, 7) response 8, (1, 5) 6, (0, 1) 2, (2, 0) 1.


def _batches(ids=IDS, mask=MASK, labels=LABELS):
    # two batches: the sequence index runs on over batches
    return [
        ({"input_ids": ids[:2], "attention_mask": mask[:2]}, labels[:2]),
        ({"input_ids": ids[2:], "attention_mask": mask[2:]}, labels[2:]),
    ]


@pytest.fixture(scope="module")
def report():
    net = WordNet().double().eval()
    return measure_selectivity(net, _batches(), 2, layers="act", layouts="tokens", top_n=None, top_k=3)


def _cat_unit(report, k=3) -> GalleryUnit:
    (units,) = gallery_units(report, ["act"], n=U, k=k).values()
    (cat,) = [u for u in units["most"] if u.unit == CAT]
    return cat


def test_measure_keeps_sequence_and_position_of_each_top_token(report):
    layer = report.layers[0]
    assert report.token_level and report.num_samples == int((LABELS != IGNORE_INDEX).sum())
    assert layer.top_samples[:, CAT].tolist() == [2, 1, 0]
    assert layer.top_tokens[:, CAT].tolist() == [7, 5, 1]
    assert layer.top_values[:, CAT].tolist() == [8.0, 6.0, 2.0]
    # the gallery unit carries them on
    cat = _cat_unit(report)
    assert (cat.samples, cat.positions, cat.values) == ([2, 1, 0], [7, 5, 1], [8.0, 6.0, 2.0])
    assert cat.selectivity == 1.0 and cat.preferred_class == 1  # fires only on nouns


def test_top_tokens_with_context_windows_by_hand(report):
    g = {"act": {"most": [_cat_unit(report)], "least": []}}
    (tu,) = token_gallery(g, WORDS, LABELS, context=2, mask=MASK)["act"]
    got = [(e.sequence, e.position, e.token, e.label, e.value, e.left, e.right) for e in tu.entries]
    assert got == [
        (2, 7, "cat", 1, 8.0, ["sat", "cat"], []),  # the -100 "cat" at 6 is text: in the window
        (1, 5, "cat", 1, 6.0, ["sat", "the"], []),  # the padding after it is not
        (0, 1, "cat", 1, 2.0, ["the"], ["sat", "on"]),
    ]
    assert tu.end == "most" and tu.unit.unit == CAT


def test_default_window_of_five_and_ids_with_decode(report):
    g = {"act": {"most": [_cat_unit(report)], "least": []}}
    (tu,) = token_gallery(g, IDS, LABELS, mask=MASK, decode=VOCAB.__getitem__)["act"]
    assert [(e.left, e.right) for e in tu.entries] == [
        (["on", VOCAB[SCRIPT], "mat", "sat", "cat"], []),
        (["on", "the", "mat", "sat", "the"], []),
        (["the"], ["sat", "on", "the", "mat"]),  # stops at the padding
    ]
    # token lists that stop before the padding need no mask: the same windows
    unpadded = [s[:r] for s, r in zip(WORDS, REAL)]
    (same,) = token_gallery(g, unpadded, LABELS)["act"]
    assert [(e.left, e.right) for e in same.entries] == [(e.left, e.right) for e in tu.entries]


def test_padding_and_unlabelled_tokens_are_never_top_tokens(report):
    layer = report.layers[0]
    pos = list(zip(layer.top_samples.flatten().tolist(), layer.top_tokens.flatten().tolist()))
    live = ~torch.isnan(layer.selectivity)
    g = gallery_units(report, n=U, k=3)
    units = token_gallery(g, WORDS, LABELS, context=8, mask=MASK)["act"]
    assert len(units) == int(live.sum())
    for tu in units:
        for e in tu.entries:
            if e.value > 0:  # zero responses tie: any labelled token may fill the rank
                assert e.token == VOCAB[tu.unit.unit]
            assert MASK[e.sequence, e.position] == 1 and LABELS[e.sequence, e.position] != IGNORE_INDEX
            assert len(e.left) + 1 + len(e.right) <= REAL[e.sequence]  # never a padded token
    assert all(MASK[n, p] == 1 and LABELS[n, p] != IGNORE_INDEX for n, p in pos)


def test_tokens_of_other_data_or_labelled_padding_are_refused(report):
    g = {"act": {"most": [_cat_unit(report)], "least": []}}
    short = [s[:2] for s in WORDS]  # position 7 is no token of these lists
    with pytest.raises(ValueError, match="no labelled token"):
        token_gallery(g, short, LABELS)
    with pytest.raises(ValueError, match="is padding"):
        token_gallery(g, WORDS, LABELS, mask=torch.zeros_like(MASK))
    image_unit = GalleryUnit("act", 0, 1.0, 0, [0], [1.0])  # measured with (N,) labels
    with pytest.raises(ValueError, match="no token positions"):
        token_gallery({"act": {"most": [image_unit], "least": []}}, WORDS, LABELS)


def test_html_escapes_tokens_and_highlights_the_top_one(report):
    g = gallery_units(report, ["act"], n=U, k=3)
    html = token_gallery_html(token_gallery(g, WORDS, LABELS, mask=MASK), class_names=["other", "noun"])
    assert "<script" not in html  # the word never opens an element
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert '<mark class="tok">cat</mark>' in html
    assert '<mark class="tok">&lt;script&gt;alert(1)&lt;/script&gt;</mark>' in html  # its own neuron
    assert "prefers noun" in html and "SI 1.000" in html
    tags = set(re.findall(r"<\s*([a-zA-Z0-9]+)", html))
    assert tags <= {"section", "h3", "h4", "div", "table", "thead", "tbody", "tr", "th", "td", "span", "mark"}


def test_write_token_gallery_writes_one_page(report, tmp_path):
    path = selectivity.write_token_gallery(
        report,
        IDS,
        LABELS,
        tmp_path,
        layers=["act"],
        n=1,
        k=3,
        context=2,
        mask=MASK,
        decode=VOCAB.__getitem__,
    )
    assert path == tmp_path / "gallery.html"
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert page.count('<div class="unit">') == 2  # the most and the least selective unit
    assert selectivity.write_token_gallery is write_token_gallery
    named = write_token_gallery(report, WORDS, LABELS, tmp_path / "g.html", k=3, mask=MASK)
    assert named == tmp_path / "g.html" and named.is_file()


def test_write_token_gallery_refuses_a_report_of_whole_inputs(tmp_path):
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    rep = measure_selectivity(net, [(torch.rand(4, 2), torch.tensor([0, 1, 0, 1]))], 2, layers="1", top_k=2)
    with pytest.raises(ValueError, match=r"\(N, T\) labels"):
        write_token_gallery(rep, WORDS, LABELS, tmp_path, k=2)


def test_a_gpt2_units_top_tokens_are_its_largest_responses_at_those_positions(tmp_path):
    transformers = pytest.importorskip("transformers")
    from selectivity import ActivationCapture, family_preset

    cfg = transformers.GPT2Config(vocab_size=20, n_embd=8, n_layer=1, n_head=2, n_inner=12, n_positions=16)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).double().eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 20, (5, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = mask[3, 4:] = 0  # right padding
    labels = torch.randint(0, 3, (5, 7), generator=g)
    labels[mask == 0] = IGNORE_INDEX
    labels[:, 0] = IGNORE_INDEX
    batches = [({"input_ids": ids[:3], "attention_mask": mask[:3]}, labels[:3])]
    batches.append(({"input_ids": ids[3:], "attention_mask": mask[3:]}, labels[3:]))
    rep = measure_selectivity(model, batches, 3, top_n=None, top_k=4, **family_preset("gpt2"))
    (layer,) = rep.layers
    # independently: the raw (N, T, 12) activation, every labelled token a candidate
    with ActivationCapture(model, layer.name, reduce=lambda t: t, detach=True) as cap:
        model(input_ids=ids, attention_mask=mask)
        raw = cap.outputs[layer.name]
    keep = labels != IGNORE_INDEX
    # (batch composition may move the last bit of a float64 response: close, not equal)
    torch.testing.assert_close(layer.top_values, raw[keep].topk(4, dim=0).values, rtol=0, atol=1e-12)
    at = raw[layer.top_samples, layer.top_tokens, torch.arange(12)]  # (4, 12): at the kept places
    torch.testing.assert_close(at, layer.top_values, rtol=0, atol=1e-12)
    assert keep[layer.top_samples, layer.top_tokens].all()  # never padding, never -100
    page = write_token_gallery(
        rep, ids, labels, tmp_path, k=4, mask=mask, decode=lambda i: f"w{i}"
    ).read_text()
    assert page.count('<mark class="tok">') == 2 * 3 * 4  # 3 most and 3 least selective units, 4 tokens each
