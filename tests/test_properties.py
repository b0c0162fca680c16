"""Property-based tests of every parser that takes outside input (Hypothesis).

Each property runs a fixed number of examples (``EXAMPLES``, no deadline) so CI time is
predictable; the only acceptable failures are the package's own ValueError-family errors
(``DatasetFormatError`` for data files, ``ConfigError`` for options and configs).
"""

from __future__ import annotations

import math
import pickle
import string
from dataclasses import fields

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selectivity.data import DatasetFormatError, read_cifar10_batch, restricted_unpickle
from selectivity.run.config import ConfigError, TrainConfig, make_config, parse_overrides
from selectivity.sweep import SweepSpec, parse_floats, parse_grid, parse_seeds

#: Examples per property (reported in the helper's closing note).
EXAMPLES = 200
PROPS = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

FLOAT_FIELDS = [f.name for f in fields(TrainConfig) if f.type in ("float", float)]


# --------------------------------------------------------------------------- pickles
def _leaves():
    return (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**70), max_value=2**70)
        | st.floats(allow_nan=True)
        | st.binary(max_size=40)
        | st.text(max_size=20)
        | st.builds(
            lambda n, d: np.zeros(n, dtype=d),
            st.integers(0, 8),
            st.sampled_from([np.uint8, np.int64, np.float32]),
        )
    )


_objects = st.recursive(
    _leaves(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.binary(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


def _mutate(data: bytes, cuts: list[tuple[int, int]]) -> bytes:
    b = bytearray(data)
    for pos, val in cuts:
        if b:
            b[pos % len(b)] = val
    return bytes(b)


# Byte strings that escaped the unpickler before (found by fuzzing the old code).
_ESCAPED_BEFORE = [
    b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00xX\x03\x00\x00\x00zzz\x86R.",  # LookupError
    b"\x96;\xd9\xdd\xcc\x05\xa8\xe2\x00\xbd.M\x81\x91AU\x10~\xdcC\xf1\xd3M\xc5hb\xcfb\x0f)\xa4\xef =I\xba\xd4U\x0e",  # MemoryError
    b"\x8d\xf7twBy\x18\x15\xed\xaf\xff,",  # OverflowError
]


@pytest.mark.parametrize("data", _ESCAPED_BEFORE)
def test_unpickler_bytes_that_escaped_before(data):
    with pytest.raises(DatasetFormatError, match="damaged or not a CIFAR-10 pickle"):
        restricted_unpickle(data, "data_batch_1")


@PROPS
@given(st.binary(max_size=600))
def test_unpickler_random_bytes_only_clean_errors(data):
    try:
        out = restricted_unpickle(data, "fuzz")
    except DatasetFormatError as e:
        assert "\n" not in str(e)
    else:
        assert isinstance(out, dict)


@PROPS
@given(st.binary(max_size=300), st.sampled_from([b"\x80\x02", b"\x80\x04", b"\x80\x05", b"(", b"}"]))
def test_unpickler_random_bytes_after_a_pickle_header(data, head):
    try:
        restricted_unpickle(head + data, "fuzz")
    except DatasetFormatError:
        pass


@PROPS
@given(
    _objects,
    st.integers(0, pickle.HIGHEST_PROTOCOL),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=3),
    st.integers(0, 400),
)
def test_unpickler_random_and_damaged_pickles(obj, protocol, cuts, keep):
    data = pickle.dumps(obj, protocol=protocol)
    for payload in (data, _mutate(data, cuts), data[: keep % (len(data) + 1)]):
        try:
            out = restricted_unpickle(payload, "fuzz")
        except DatasetFormatError:
            continue
        assert isinstance(out, dict)


_batch_values = st.one_of(
    _objects,
    st.builds(
        lambda n, w, d: np.zeros((n, w), dtype=d),
        st.integers(0, 4),
        st.sampled_from([3072, 3071, 10]),
        st.sampled_from([np.uint8, np.float64]),
    ),
    st.lists(st.integers(-(2**70), 2**70), max_size=4),
)


@PROPS
@given(
    st.dictionaries(
        st.sampled_from([b"data", b"labels", "data", "labels", b"other"]), _batch_values, max_size=3
    ),
    st.integers(0, pickle.HIGHEST_PROTOCOL),
)
def test_cifar_batch_reader_only_clean_errors(batch, protocol):
    try:
        images, labels = read_cifar10_batch(pickle.dumps(batch, protocol=protocol), "data_batch_1")
    except DatasetFormatError as e:
        assert "\n" not in str(e)
    else:
        assert images.dtype == np.uint8 and images.shape[1:] == (3, 32, 32)
        assert labels.dtype == np.int64 and labels.shape == (images.shape[0],)


def test_cifar_batch_without_labels_is_a_format_error():
    data = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}, protocol=2)
    with pytest.raises(DatasetFormatError, match="no 'labels' entry"):
        read_cifar10_batch(data, "data_batch_1")


# --------------------------------------------------------------------------- command-line lists
_numbers = st.floats(allow_nan=True, allow_infinity=True).map(repr)
_listish = st.lists(_numbers | st.text(alphabet="0123456789-+.,eE naif_", max_size=8), max_size=6).map(
    ",".join
)


@PROPS
@given(_listish | st.text(max_size=30))
def test_parse_floats_gives_finite_floats_or_config_error(text):
    try:
        vals = parse_floats(text)
    except ConfigError:
        return
    assert vals and all(isinstance(v, float) and math.isfinite(v) for v in vals)
    assert len(set(vals)) == len(vals)


@PROPS
@given(
    st.text(alphabet="0123456789-, ", max_size=25)
    | st.integers(-5, 10**20).map(str)
    | st.tuples(st.integers(0, 10**19), st.integers(0, 10**19)).map(lambda t: f"{t[0]}-{t[1]}")
    | st.text(max_size=10)
)
def test_parse_seeds_gives_bounded_seeds_or_config_error(text):
    try:
        seeds = parse_seeds(text)
    except ConfigError:
        return
    assert seeds and len(seeds) <= 100_000 and all(0 <= s < 2**63 for s in seeds)


_keys = st.sampled_from([f.name for f in fields(TrainConfig)] + ["epochz", "", "model", "alpha", "lr"])
_values = st.text(alphabet=string.ascii_letters + string.digits + "-+.,:[] eE", max_size=12) | _numbers


@PROPS
@given(st.lists(st.tuples(_keys, st.lists(_values, min_size=0, max_size=3)), max_size=2))
def test_parse_grid_then_validate_gives_runs_or_config_error(items):
    texts = [f"{k}={','.join(vs)}" for k, vs in items]
    try:
        grid = parse_grid(texts)
        spec = SweepSpec(models=["resnet20"], alphas=[0.0], seeds=[0], preset="smoke", grid=grid).validate()
    except ConfigError:
        return
    runs = spec.runs()
    assert len({r.run_id for r in runs}) == len(runs)  # ids never collide


@PROPS
@given(
    st.lists(st.tuples(_keys, _values).map(lambda kv: f"{kv[0]}={kv[1]}") | st.text(max_size=8), max_size=4)
)
def test_set_overrides_give_a_valid_config_or_config_error(items):
    try:
        cfg = make_config("paper", parse_overrides(items))
    except ConfigError:
        return
    for name in FLOAT_FIELDS:
        assert math.isfinite(getattr(cfg, name))


# --------------------------------------------------------------------------- config validation
_bad_or_any_float = st.sampled_from(
    [math.nan, math.inf, -math.inf, -1.0, -1e-300, 1e308, -1e308, 0.0, 1.0]
) | st.floats(allow_nan=True, allow_infinity=True)


@PROPS
@given(st.dictionaries(st.sampled_from(FLOAT_FIELDS), _bad_or_any_float, min_size=1))
def test_every_float_field_rejects_nan_and_inf(values):
    as_text = {k: repr(v) for k, v in values.items()}
    for overrides in (values, as_text):
        try:
            cfg = make_config("paper", overrides)
        except ConfigError as e:
            assert "\n" not in str(e)
            continue
        assert all(math.isfinite(v) for v in values.values())
        for name in FLOAT_FIELDS:
            assert math.isfinite(getattr(cfg, name))


@pytest.mark.parametrize("name", ["weight_decay", "si_eps", "negative_slope", "lr", "alpha", "momentum"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_inf_are_refused_by_name(name, value):
    with pytest.raises(ConfigError, match=f"'{name}'"):
        make_config("paper", {name: value})


def test_float_fields_are_found():
    assert {"weight_decay", "si_eps", "negative_slope", "alpha", "lr"} <= set(FLOAT_FIELDS)
