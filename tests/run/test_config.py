"""TrainConfig built from command-line strings: every field type is coerced."""

import pytest

from selectivity.run.config import ConfigError, make_config


def test_optional_fields_are_coerced_from_strings():
    # `int | None` fields (PEP 604 unions) once slipped through as strings.
    cfg = make_config("smoke", {"num_threads": "2", "train_subset": "128", "eval_subset": "none"})
    assert cfg.num_threads == 2 and cfg.train_subset == 128 and cfg.eval_subset is None
    assert make_config(None, {"selectivity_layers": "a,b"}).selectivity_layers == ["a", "b"]
    with pytest.raises(ConfigError, match="num_threads"):
        make_config(None, {"num_threads": "two"})


def test_allowed_values_come_from_their_registries():
    from selectivity.core.metrics import NEGATIVE_RULES
    from selectivity.data import DATASETS
    from selectivity.models import ALLOWED_ACTIVATIONS

    for name in DATASETS:
        assert make_config(None, {"dataset": name}).dataset == name
    for rule in NEGATIVE_RULES:
        assert make_config(None, {"negative_rule": rule}).negative_rule == rule
    for act in ALLOWED_ACTIVATIONS:
        assert make_config(None, {"activation": act}).activation == act
    with pytest.raises(ConfigError, match="'cifar10' or 'tiny-imagenet'"):
        make_config(None, {"dataset": "mnist"})
