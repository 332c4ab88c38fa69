"""The training-relevance classification of every spec field, and the training digest (re-gating)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import BaseModel

from eft_api.relevance import TRAINING_RELEVANT, is_relevant, leaves, training_digest
from eft_api.spec import EmbeddingFinetuneSpec, parse_spec

SPEC: dict[str, Any] = {
    "model": {"base": "sentence-transformers/all-MiniLM-L6-v2"},
    "data": {"train": {"uri": "s3://bucket/train/", "format": "pairs"}},
    "output": {"uri": "s3://bucket/out/"},
    "evaluation": {"guards": [{"name": "faq", "uri": "s3://bucket/faq.jsonl", "maxDrop": 0.01}]},
}


def _model_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every field path of the typed spec model (camelCase), nested models walked, lists and unions too."""
    out = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{info.alias or name}"
        out.append(path)
        for sub in _nested(info.annotation):
            out += _model_paths(sub, path + ".")
    return out


def _nested(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in getattr(annotation, "__args__", ()) for m in _nested(a)]


def test_every_spec_field_is_classified_and_every_declared_path_exists() -> None:
    paths = _model_paths(EmbeddingFinetuneSpec)
    assert len(paths) > 100
    top = {p for p in paths if "." not in p}
    assert top <= set(TRAINING_RELEVANT), f"declare these top-level fields: {sorted(top - set(TRAINING_RELEVANT))}"
    for p in paths:
        is_relevant(p)  # raises for a field that is not classified
    stale = set(TRAINING_RELEVANT) - set(paths)
    assert not stale, f"classified paths that the spec does not have: {sorted(stale)}"


@pytest.mark.parametrize(
    ("change", "same"),
    [
        (lambda s: s["evaluation"]["guards"][0].update(maxDrop=0.05), True),
        (lambda s: s["evaluation"].update(gate={"minGain": 0.01, "decideBy": "ciLower"}), True),
        (lambda s: s["evaluation"].update(baselines=[{"name": "b", "model": {"base": "x/y"}}]), True),
        (lambda s: s.update(training={"merge": {"enabled": True}}), True),
        (lambda s: s.update(output={"uri": "s3://bucket/elsewhere/"}), True),
        (lambda s: s.update(resources={"cpu": "8"}), True),
        (lambda s: s.update(runPolicy={"backoffLimit": 5}), True),
        (lambda s: s["data"].update(eval={"maxDistractors": 5}), True),
        (lambda s: s.update(training={"epochs": 2}), False),
        (lambda s: s["data"].update(eval={"heldOutFraction": 0.2}), False),
        (lambda s: s["model"].update(maxSeqLength=128), False),
        (lambda s: s.update(resources={"gpus": 2}), False),
        (lambda s: s.update(storage={"endpoint": "http://other:9000"}), False),
        (lambda s: s.update(image="registry.example/eft-trainer:2"), False),
    ],
)
def test_training_digest_changes_only_with_training_relevant_fields(change: Any, same: bool) -> None:
    spec = copy.deepcopy(SPEC)
    change(spec)
    assert (training_digest(parse_spec(spec)) == training_digest(parse_spec(SPEC))) is same


def test_a_default_spelled_out_keeps_the_digest() -> None:
    spelled = copy.deepcopy(SPEC)
    spelled["training"] = {"epochs": 1, "loss": "MultipleNegativesRanking"}
    assert training_digest(parse_spec(spelled)) == training_digest(parse_spec(SPEC))
    assert leaves({"a": {"b": 1, "c": [1, 2]}}) == {"a.b": 1, "a.c": [1, 2]}
