"""The typed status model (eft_api.status) and the CRD's status schema describe the same trainerStatus."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from eft_api.schema import openapi_schema, structural_problems
from eft_api.status import EmbeddingFinetuneStatus, TrainerStatus

CRD_NODE = openapi_schema()["properties"]["status"]["properties"]["trainerStatus"]
MODEL = TrainerStatus.model_json_schema(by_alias=True, mode="validation")


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        return _resolve(MODEL["$defs"][node["$ref"].split("/")[-1]])
    branches = [b for b in node.get("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1:
        return {**_resolve(branches[0]), **{k: v for k, v in node.items() if k != "anyOf"}}
    return node


def _pairs(
    crd: dict[str, Any], model: dict[str, Any], path: str
) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(path, CRD node, model node) for every node of the CRD's trainerStatus, walking both together."""
    model = _resolve(model)
    yield path, crd, model
    assert set(model.get("properties", {})) == set(crd.get("properties", {})), f"{path}: the fields differ"
    for key, sub in crd.get("properties", {}).items():
        yield from _pairs(sub, model["properties"][key], f"{path}.{key}")
    if "items" in crd:
        yield from _pairs(crd["items"], model["items"], f"{path}[]")


PAIRS = list(_pairs(CRD_NODE, MODEL, "trainerStatus"))


@pytest.mark.parametrize(("path", "crd", "model"), PAIRS, ids=[p for p, _, _ in PAIRS])
def test_field_agrees(path: str, crd: dict[str, Any], model: dict[str, Any]) -> None:
    assert model.get("type") == crd["type"], path
    for key in ("minimum", "maximum", "minLength", "maxLength", "maxItems", "required"):
        assert model.get(key) == crd.get(key), f"{path}: {key}"
    if path not in ("trainerStatus", "trainerStatus.metrics", "trainerStatus.metrics[]"):  # class docstrings
        assert model.get("description") == " ".join(crd["description"].split()), path


def resource(trainer_status: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "finetune.eft.dev/v1alpha1",
        "kind": "EmbeddingFinetune",
        "metadata": {"name": "x"},
        "spec": {
            "model": {"base": "sentence-transformers/all-MiniLM-L6-v2"},
            "data": {"train": {"uri": "s3://bucket/pairs.jsonl", "format": "pairs"}},
            "output": {"uri": "s3://bucket/runs/"},
        },
        "status": {"trainerStatus": trainer_status},
    }


GOOD = {
    "phase": "Training",
    "progressPercentage": 41,
    "estimatedRemainingSeconds": 10,
    "metrics": [{"name": "loss", "value": "1.5"}, {"name": "step", "value": "25"}],
    "lastUpdatedTime": "2026-12-01T10:00:00Z",
}


@pytest.mark.parametrize(
    ("block", "path"),
    [
        (GOOD, None),
        ({**GOOD, "progressPercentage": 101}, "progressPercentage"),
        ({**GOOD, "progressPercentage": -1}, "progressPercentage"),
        ({**GOOD, "estimatedRemainingSeconds": -5}, "estimatedRemainingSeconds"),
        ({**GOOD, "metrics": [{"name": "loss"}]}, "metrics[0].value"),
        ({**GOOD, "metrics": [{"name": "", "value": "1"}]}, "metrics[0].name"),
        ({**GOOD, "extra": 1}, "extra"),
    ],
)
def test_model_and_crd_accept_and_refuse_the_same_blocks(block: dict[str, Any], path: str | None) -> None:
    problems = structural_problems(resource(block))
    if path is None:
        assert problems == []
        assert TrainerStatus.model_validate(block).to_status() == block
        return
    assert [p.path for p in problems] == [f"status.trainerStatus.{path}"]
    with pytest.raises(ValidationError) as err:
        TrainerStatus.model_validate(block)
    locs = {".".join(str(x) for x in e["loc"]) for e in err.value.errors()}
    assert path.replace("[0]", ".0") in locs


def test_read_back_through_the_model() -> None:
    got = TrainerStatus.of({"trainerStatus": GOOD})
    assert got is not None and got.progress_percentage == 41 and got.metric("loss") == "1.5"
    assert got.metric("nothing") is None and TrainerStatus.of({}) is None


# ---------------------------------------------------------------- the whole status, both ways

STATUS_CRD = openapi_schema()["properties"]["status"]
STATUS_MODEL = EmbeddingFinetuneStatus.model_json_schema(by_alias=True, mode="validation")
#: JSON Schema types of the model that the CRD's type accepts.
COMPATIBLE = {"integer": {"integer"}, "number": {"number", "integer"}, "string": {"string"}, "boolean": {"boolean"}}


def _resolve_in(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        return _resolve_in(schema, schema["$defs"][node["$ref"].split("/")[-1]])
    branches = [b for b in node.get("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1:
        return {**_resolve_in(schema, branches[0]), **{k: v for k, v in node.items() if k != "anyOf"}}
    return node


def _walk(crd: dict[str, Any], model: dict[str, Any], path: str) -> Iterator[str]:
    """A problem for every node where the model and the CRD's status schema disagree."""
    model = _resolve_in(STATUS_MODEL, model)
    mtype, ctype = model.get("type", "string" if "enum" in model else None), crd.get("type")
    if (mtype in COMPATIBLE and ctype not in COMPATIBLE[mtype]) or (mtype in ("object", "array") and ctype != mtype):
        yield f"{path}: the model says {mtype}, the CRD {ctype}"
    crd_props, model_props = set(crd.get("properties", {})), set(model.get("properties", {}))
    yield from (f"{path}.{k}: in the model, not in the CRD" for k in sorted(model_props - crd_props))
    yield from (f"{path}.{k}: in the CRD, not in the model" for k in sorted(crd_props - model_props))
    for key in sorted(crd_props & model_props):
        yield from _walk(crd["properties"][key], model["properties"][key], f"{path}.{key}")
    if "items" in crd and "items" in model:
        yield from _walk(crd["items"], model["items"], f"{path}[]")


def test_the_status_model_and_the_crd_status_schema_have_the_same_fields_and_types() -> None:
    assert list(_walk(STATUS_CRD, STATUS_MODEL, "status")) == []


def test_the_walk_sees_a_missing_field_and_a_wrong_type() -> None:
    crd = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}
    model = {"type": "object", "properties": {"a": {"type": "integer"}, "c": {"type": "string"}}}
    assert list(_walk(crd, model, "s")) == [
        "s.c: in the model, not in the CRD",
        "s.b: in the CRD, not in the model",
        "s.a: the model says integer, the CRD string",
    ]
