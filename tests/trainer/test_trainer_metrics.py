"""Metric math against hand computation, and the chunked top-k against a brute-force sort."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eft_trainer.data import IRSet
from eft_trainer.evaluation import dimensions, evaluate_embeddings, query_metrics, top_k

L2 = math.log2


@pytest.mark.parametrize(
    ("ranked", "relevant", "k", "expected"),
    [
        # hit at rank 1
        (["a", "b", "c"], {"a"}, 3, {"accuracy": 1, "recall": 1, "mrr": 1, "ndcg": 1, "map": 1}),
        # hit at rank 2 only
        (["b", "a", "c"], {"a"}, 3, {"accuracy": 1, "recall": 1, "mrr": 0.5, "ndcg": 1 / L2(3), "map": 0.5}),
        # no hit within k
        (["b", "c", "a"], {"a"}, 2, {"accuracy": 0, "recall": 0, "mrr": 0, "ndcg": 0, "map": 0}),
        # two relevant, found at ranks 1 and 3
        (
            ["a", "x", "b"],
            {"a", "b"},
            3,
            {
                "accuracy": 1,
                "recall": 1,
                "mrr": 1,
                "ndcg": (1 + 1 / L2(4)) / (1 + 1 / L2(3)),
                "map": (1 + 2 / 3) / 2,
            },
        ),
        # two relevant, one found at rank 2 with k=1 and k=2
        (
            ["x", "a"],
            {"a", "b"},
            2,
            {"accuracy": 1, "recall": 0.5, "mrr": 0.5, "ndcg": (1 / L2(3)) / (1 + 1 / L2(3)), "map": 0.5 / 2},
        ),
        # three relevant but k=1: MAP divides by min(k, |rel|)
        (["a"], {"a", "b", "c"}, 1, {"accuracy": 1, "recall": 1 / 3, "mrr": 1, "ndcg": 1, "map": 1}),
    ],
)
def test_query_metrics_by_hand(ranked: list[str], relevant: set[str], k: int, expected: dict[str, float]) -> None:
    got = query_metrics(ranked, relevant, [k])
    for name, value in expected.items():
        assert got[f"{name}@{k}"] == pytest.approx(value), name


def test_top_k_matches_brute_force_with_chunks_and_ties() -> None:
    rng = np.random.default_rng(0)
    q = rng.normal(size=(7, 5)).astype(np.float32)
    c = rng.normal(size=(53, 5)).astype(np.float32)
    c[10] = c[3]  # a tie: the lower index must come first
    got = top_k(q, c, 6, chunk=8)
    scores = q @ c.T
    for i in range(7):
        expected = sorted(range(53), key=lambda j: (-scores[i, j], j))[:6]
        assert list(got[i]) == expected


def test_top_k_excludes() -> None:
    q = np.eye(3, dtype=np.float32)
    c = np.eye(3, dtype=np.float32)
    got = top_k(q, c, 1, exclude={0: {0}})
    assert got[0][0] != 0 and got[1][0] == 1


def test_evaluate_embeddings_slices_and_renormalises() -> None:
    # Query 0 matches doc 0 only in the first 2 dims; doc 1 wins at full dim via dims 3-4.
    q = np.array([[1, 0, 1, 1]], dtype=np.float32)
    c = np.array([[1, 0, 0, 0], [0.1, 0, 1, 1]], dtype=np.float32)
    irset = IRSet({"q": "x"}, {"d0": "a", "d1": "b"}, {"q": {"d0"}})
    res = evaluate_embeddings(q, c, irset, [4, 2], [1])
    assert res.metrics[4]["accuracy@1"] == 0.0
    assert res.metrics[2]["accuracy@1"] == 1.0
    assert res.per_query[2]["ndcg@1"] == [1.0]


def test_dimensions() -> None:
    assert dimensions(384, [384, 256, 64]) == [384, 256, 64]
    assert dimensions(384, []) == [384]
    assert dimensions(384, [512, 128]) == [384, 128]
