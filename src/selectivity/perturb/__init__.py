"""Pure transforms of input batches (tensors in, tensors out): corruptions, attacks.

Like :mod:`selectivity.analysis`, nothing here imports training, sweeps, data
loading, evaluation, the report or the CLI (checked by import-linter).
"""
