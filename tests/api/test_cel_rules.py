"""Table of cases for each CEL rule of the CRD, and the typed model's verdict on the same specs."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from cel import evaluate, failing_rules

from eft_api.schema import cel_rules, structural_problems
from eft_api.spec import InvalidSpec, parse_resource


def resource(**spec_changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"base": "sentence-transformers/all-MiniLM-L6-v2"},
        "data": {"train": {"uri": "s3://bucket/train/", "format": "pairs"}},
        "output": {"uri": "s3://bucket/out/"},
    }
    for dotted, value in spec_changes.items():
        node = spec
        keys = dotted.split("__")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = copy.deepcopy(value)
    return {
        "apiVersion": "finetune.eft.dev/v1alpha1",
        "kind": "EmbeddingFinetune",
        "metadata": {"name": "t"},
        "spec": spec,
    }


FITTING = {
    "pairs": ["MultipleNegativesRanking", "CachedMultipleNegativesRanking", "MultipleNegativesSymmetricRanking"],
    "triplets": ["MultipleNegativesRanking", "CachedMultipleNegativesRanking", "Triplet"],
    "scored-pairs": ["CoSENT", "AnglE", "CosineSimilarity"],
    "labeled-texts": ["BatchAllTriplet", "BatchHardTriplet", "BatchSemiHardTriplet"],
    "beir": ["MultipleNegativesRanking", "CachedMultipleNegativesRanking", "MultipleNegativesSymmetricRanking"],
}
ALL_LOSSES = sorted({loss for losses in FITTING.values() for loss in losses})

CASES: list[tuple[str, dict[str, Any], str | None]] = [
    (
        f"{fmt}+{loss}",
        {"data__train__format": fmt, "training__loss": loss},
        None if loss in FITTING[fmt] else "spec.training.loss",
    )
    for fmt in FITTING
    for loss in ALL_LOSSES
] + [
    ("dims-empty", {"training__matryoshkaDims": []}, None),
    ("dims-one", {"training__matryoshkaDims": [384]}, None),
    ("dims-decreasing", {"training__matryoshkaDims": [768, 512, 64]}, None),
    ("dims-increasing", {"training__matryoshkaDims": [64, 128]}, "spec.training.matryoshkaDims"),
    ("dims-equal", {"training__matryoshkaDims": [128, 128]}, "spec.training.matryoshkaDims"),
    ("dims-dip", {"training__matryoshkaDims": [384, 64, 128]}, "spec.training.matryoshkaDims"),
    ("mining-pairs", {"training__hardNegatives": {"enabled": True}}, None),
    ("mining-off-scored", {"data__train__format": "scored-pairs", "training__loss": "CoSENT"}, None),
    (
        "mining-labeled",
        {
            "data__train__format": "labeled-texts",
            "training__loss": "BatchAllTriplet",
            "training__hardNegatives": {"enabled": True},
        },
        "spec.training.hardNegatives.enabled",
    ),
    ("metric-default", {}, None),
    ("metric-k-listed", {"evaluation": {"kValues": [1, 100], "primaryMetric": "recall@100"}}, None),
    (
        "metric-k-unlisted",
        {"evaluation": {"kValues": [1, 5], "primaryMetric": "mrr@10"}},
        "spec.evaluation.primaryMetric",
    ),
    (
        "metric-k-suffix-trap",
        {"evaluation": {"kValues": [0 + 1, 10], "primaryMetric": "ndcg@100"}},
        "spec.evaluation.primaryMetric",
    ),
    ("gate-no-dimension", {"evaluation": {"gate": {"minGain": 0.02}}}, None),
    (
        "gate-dim-listed",
        {"training__matryoshkaDims": [384, 128], "evaluation": {"gate": {"minGain": 0, "dimension": 128}}},
        None,
    ),
    ("gate-dim-no-dims", {"evaluation": {"gate": {"minGain": 0, "dimension": 768}}}, None),
    (
        "gate-dim-unlisted",
        {"training__matryoshkaDims": [384, 128], "evaluation": {"gate": {"minGain": 0, "dimension": 256}}},
        "spec.evaluation.gate.dimension",
    ),
    ("beir-prefix", {"data__train__format": "beir", "data__train__uri": "s3://bkt/beir/"}, None),
    (
        "beir-file",
        {"data__train__format": "beir", "data__train__uri": "s3://bkt/beir/corpus.jsonl"},
        "spec.data.train.uri",
    ),
]


@pytest.mark.parametrize(("name", "changes", "expect"), CASES, ids=[c[0] for c in CASES])
def test_cel_rule_and_typed_model_agree(name: str, changes: dict[str, Any], expect: str | None) -> None:
    doc = resource(**changes)
    assert structural_problems(doc) == []
    cel = [where for _, where in failing_rules(doc)]
    assert cel == ([expect] if expect else [])
    if expect is None:
        parse_resource(doc)
    else:
        with pytest.raises(InvalidSpec) as info:
            parse_resource(doc)
        assert [p.path for p in info.value.problems] == [expect]


def test_every_rule_has_a_failing_case() -> None:
    """No CEL rule goes untested: each one fails on at least one case of the table."""
    failing = {rule.rule for _, changes, expect in CASES if expect for rule, _ in failing_rules(resource(**changes))}
    assert failing == {r.rule for r in cel_rules()}


@pytest.mark.parametrize(
    ("rule", "value", "expected"),
    [
        ("self.map(x, 0 - x).isSorted()", [3, 2, 1], True),
        ("self.map(x, 0 - x).isSorted()", [1, 2], False),
        ("self.map(x, 0 - x).isSorted()", [], True),
    ],
)
def test_is_sorted_has_kubernetes_semantics(rule: str, value: list[int], expected: bool) -> None:
    assert evaluate(rule, value) is expected
