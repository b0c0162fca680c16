"""Property-based tests of the readers of the analysis files (Hypothesis).

A ``robustness`` result, a ``robustness`` partial file and a ``geometry`` result come from
disk and may be damaged, hand-edited or written by another version. Whatever a file
holds, its reader either gives a record whose values are of the documented types and
ranges (and whose rows any SQLite table accepts) or raises ``DamagedFileError`` naming
the file; nothing else. Each property runs ``EXAMPLES`` examples of mutated valid files
and of arbitrary JSON, no deadline; pure validation, no training.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selectivity.evaluate.geometry import GEOMETRY_TABLES, check_geometry
from selectivity.evaluate.robustness import ROBUSTNESS_TABLES, check_partial, check_result
from selectivity.run.files import DamagedFileError

EXAMPLES = 200
PROPS = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
WHERE = Path("/sweep/runs/r/robustness/abc.json")

SETTINGS = {
    "n_images": 20,
    "image_seed": 0,
    "corruptions": ["gaussian_noise"],
    "severities": [1],
    "params": "auto",
    "corruption_seed": 0,
    "attacks": ["fgsm"],
    "epsilons": [4 / 255],
    "norm": "linf",
    "pgd_steps": 10,
    "pgd_step_factor": 2.5,
    "pgd_restarts": 1,
    "attack_seed": 0,
    "batch_size": 20,
    "source": "generated (auto, seed 0)",
}
RESULT = {
    "settings": SETTINGS,
    "settings_key": "0123456789ab",
    "corruption_params": "cifar10",
    "n_images": 20,
    "clean_accuracy": 0.1,
    "corruptions": [{"corruption": "gaussian_noise", "severity": 1, "accuracy": 0.15}],
    "n_corruption_cells": 1,
    "mean_corruption_accuracy": 0.15,
    "relative_corruption_accuracy": 1.5,
    "attacks": [{"attack": "fgsm", "norm": "linf", "epsilon": 4 / 255, "accuracy": 0.05}],
    "cell_sha1": {"gaussian_noise/1": "a" * 40},
    "image_indices_sha1": "b" * 40,
    "device": "cpu",
    "seconds": 1.5,
}
PARTIAL = {
    "settings": SETTINGS,
    "clean": 0.1,
    "cells": {"gaussian_noise/1": 0.15},
    "attacks": {"fgsm/linf/0.01568627450980392": 0.05},
    "sha1": {"gaussian_noise/1": "a" * 40},
}
GEOMETRY = {
    "format": 1,
    "settings": {"n_images": 20, "layers": ["act1"], "images_used": 20},
    "settings_key": "0123456789ab",
    "matched_l2_epsilons": {"gaussian_noise-3": 1.25},
    "rows": [
        {
            "layer_index": -1,
            "layer": "output",
            "kind": "clean",
            "perturbation": "clean",
            "measure": "accuracy",
            "value": 0.1,
        },
        {
            "layer_index": 0,
            "layer": "act1",
            "kind": "corruption",
            "perturbation": "gaussian_noise-3",
            "measure": "pca",
            "value": 7.0,
        },
        {
            "layer_index": 0,
            "layer": "act1",
            "kind": "clean",
            "perturbation": "clean",
            "measure": "participation_ratio",
            "value": None,
        },
    ],
}

# JSON values, as json.load gives them (with the large integers and non-finite floats
# Python's json module accepts).
_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
_json = st.recursive(
    _leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


def _paths(obj, prefix=()):
    """Every (path, value) inside a JSON value (dict keys and list indices)."""
    yield prefix, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def _replaced(obj, path, value):
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(obj, dict):
        return {**obj, head: _replaced(obj[head], rest, value)}
    out = list(obj)
    out[head] = _replaced(obj[head], rest, value)
    return out


def _mutations(valid: dict):
    """A valid file with one value anywhere in it replaced by arbitrary JSON, or a key dropped."""
    places = [p for p, _ in _paths(valid)]

    def build(i, value, drop):
        path = places[i % len(places)]
        if drop and path and isinstance(_get(valid, path[:-1]), dict):
            parent = _get(valid, path[:-1])
            return _replaced(valid, path[:-1], {k: v for k, v in parent.items() if k != path[-1]})
        return _replaced(valid, path, value)

    return st.builds(build, st.integers(0, 10_000), _json, st.booleans())


def _get(obj, path):
    for p in path:
        obj = obj[p]
    return obj


def _bindable(v) -> bool:
    return v is None or isinstance(v, (str, float)) or (isinstance(v, int) and -(2**63) <= v < 2**63)


def _rows_load(spec, record) -> None:
    """Every row of the record goes into an in-memory copy of the spec's tables."""
    con = sqlite3.connect(":memory:")
    try:
        for kind, table in spec.tables.items():
            con.execute(table.create_sql())
            names = table.column_names
            for row in spec.rows(record).get(kind, ()):
                values = ["run", *(row.get(n) for n in names[1:])]
                assert all(_bindable(v) for v in values), values
                con.execute(
                    f"INSERT OR REPLACE INTO {table.name} VALUES ({', '.join('?' * len(names))})", values
                )
    finally:
        con.close()


def _finite_numbers(obj) -> bool:
    return all(not (isinstance(v, float) and not math.isfinite(v)) for _, v in _paths(obj))


def _check_result_property(obj) -> None:
    try:
        rec = check_result(obj, WHERE)
    except DamagedFileError as e:
        assert str(WHERE) in str(e) and "\n" not in str(e)
        return
    assert _finite_numbers(rec)
    assert 0 <= rec["clean_accuracy"] <= 1 and isinstance(rec["n_images"], int) and rec["n_images"] >= 1
    for c in rec["corruptions"]:
        assert 0 <= c["accuracy"] <= 1 and 1 <= c["severity"] <= 5 and isinstance(c["corruption"], str)
    for a in rec["attacks"]:
        assert 0 <= a["accuracy"] <= 1 and a["epsilon"] >= 0 and isinstance(a["attack"], str)
    assert rec["n_corruption_cells"] == len(rec["corruptions"])
    json.dumps(rec, allow_nan=False)
    _rows_load(ROBUSTNESS_TABLES, rec)


@PROPS
@given(_mutations(RESULT))
def test_robustness_results_are_valid_or_refused(obj):
    _check_result_property(obj)


@PROPS
@given(_json)
def test_robustness_results_of_any_json_are_valid_or_refused(obj):
    _check_result_property(obj)


@PROPS
@given(_mutations(PARTIAL))
def test_robustness_partial_files_are_valid_or_refused(obj):
    try:
        rec = check_partial(obj, WHERE)
    except DamagedFileError as e:
        assert str(WHERE) in str(e) and "\n" not in str(e)
        return
    assert isinstance(rec["settings"], dict)
    values = [*rec["cells"].values(), *rec["attacks"].values()] + ([rec["clean"]] if "clean" in rec else [])
    assert all(isinstance(v, float) and 0 <= v <= 1 for v in values)
    assert all(isinstance(k, str) for k in (*rec["cells"], *rec["attacks"], *rec["sha1"]))
    assert all(isinstance(v, str) for v in rec["sha1"].values())


@PROPS
@given(_mutations(GEOMETRY))
def test_geometry_results_are_valid_or_refused(obj):
    try:
        rec = check_geometry(obj, WHERE)
    except DamagedFileError as e:
        assert str(WHERE) in str(e) and "\n" not in str(e)
        return
    assert _finite_numbers(rec)
    for r in rec["rows"]:
        assert isinstance(r["layer_index"], int) and -1 <= r["layer_index"] < 2**31
        assert all(isinstance(r[k], str) for k in ("layer", "kind", "perturbation", "measure"))
        assert r["value"] is None or isinstance(r["value"], float)
    _rows_load(GEOMETRY_TABLES, rec)


def test_the_valid_examples_are_accepted():
    assert check_result(RESULT, WHERE)["clean_accuracy"] == 0.1
    assert check_partial(PARTIAL, WHERE)["cells"] == PARTIAL["cells"]
    assert len(check_geometry(GEOMETRY, WHERE)["rows"]) == 3
