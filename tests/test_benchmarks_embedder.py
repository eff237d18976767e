"""benchmarks/embedder_bench.py's figures computed on small hand-made inputs (its smoke test is in test_embed.py)."""

from __future__ import annotations

import numpy as np
import pytest
from _data import load_benchmark


@pytest.mark.parametrize(
    ("pos", "neg", "expected"),
    [
        ([0.9, 0.8], [0.1, 0.2], 1.0),
        ([0.1], [0.9], 0.0),
        ([0.5], [0.5], 0.5),  # a tie counts half, as the docstring says (it counted 0: pos ranked below)
        ([0.5, 0.7], [0.5, 0.5, 0.9], (0.5 + 0.5 + 0 + 1 + 1 + 0) / 6),
    ],
)
def test_auc_is_the_chance_a_same_pair_scores_above_a_different_one(
    pos: list[float], neg: list[float], expected: float
) -> None:
    auc = load_benchmark("embedder_bench").auc
    assert auc(np.float32(pos), np.float32(neg)) == pytest.approx(expected)
    brute = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg])
    assert expected == pytest.approx(brute)
