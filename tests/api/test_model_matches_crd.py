"""The typed model and the CRD describe the same fields, enums, ranges and defaults."""

from __future__ import annotations

from typing import Any

import pytest

from eft_api.schema import iter_fields, openapi_schema
from eft_api.spec import EmbeddingFinetuneSpec

CRD_SPEC = openapi_schema()["properties"]["spec"]
MODEL_SCHEMA = EmbeddingFinetuneSpec.model_json_schema(by_alias=True, mode="validation")


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        return _resolve(MODEL_SCHEMA["$defs"][node["$ref"].split("/")[-1]])
    for key in ("anyOf", "oneOf"):
        if key in node:
            branches = [b for b in node[key] if b.get("type") != "null"]
            if len(branches) == 1:
                merged = {k: v for k, v in node.items() if k != key}
                return {**_resolve(branches[0]), **merged}
    return node


def _model_node(path: str) -> dict[str, Any]:
    node = _resolve(MODEL_SCHEMA)
    for part in path.split(".")[1:]:
        if part.endswith("[]"):
            node = _resolve(_resolve(node["properties"][part[:-2]])["items"])
        else:
            node = _resolve(node["properties"][part])
    return node


FIELDS = list(iter_fields())


def test_every_model_field_is_in_the_crd() -> None:
    crd_paths = {p for p, _ in FIELDS}

    def walk(node: dict[str, Any], path: str) -> set[str]:
        out = set()
        for key, sub in _resolve(node).get("properties", {}).items():
            here = f"{path}.{key}"
            out.add(here)
            sub = _resolve(sub)
            out |= walk(sub, here)
            items = sub.get("items")
            if isinstance(items, dict) and "properties" in _resolve(items):
                out |= walk(_resolve(items), f"{here}[]")
        return out

    assert walk(MODEL_SCHEMA, "spec") == crd_paths


@pytest.mark.parametrize(("path", "crd"), FIELDS, ids=[p for p, _ in FIELDS])
def test_field_agrees(path: str, crd: dict[str, Any]) -> None:
    model = _model_node(path)
    if "enum" in crd:
        enum = model.get("enum") or ([model["const"]] if "const" in model else None)
        assert sorted(enum or []) == sorted(crd["enum"])
    if "minimum" in crd:
        key = "exclusiveMinimum" if crd.get("exclusiveMinimum") else "minimum"
        assert model.get(key) == crd["minimum"]
    if "maximum" in crd:
        assert model.get("maximum") == crd["maximum"]
    if "pattern" in crd and not crd.get("x-kubernetes-int-or-string"):
        assert model.get("pattern") == crd["pattern"]
    if crd.get("type") == "array":
        assert model.get("maxItems") == crd.get("maxItems")
        assert model.get("minItems") == crd.get("minItems")


MINIMAL = {
    "model": {"base": "org/model"},
    "data": {"train": {"uri": "s3://bkt/train/", "format": "pairs", "columns": {}}, "eval": {}},
    "training": {"hardNegatives": {}},
    "evaluation": {"gate": {"minGain": 0.0}},
    "output": {"uri": "s3://bkt/out/"},
    "storage": {"credentialsSecret": {"name": "x"}},
    "scheduling": {"tolerations": [{"key": "k"}]},
}


def _subset(small: Any, big: Any, path: str = "spec") -> None:
    if isinstance(small, dict):
        assert isinstance(big, dict), path
        for k, v in small.items():
            assert k in big, f"{path}.{k}: the API server defaults it, the typed model does not"
            _subset(v, big[k], f"{path}.{k}")
    else:
        assert small == big, f"{path}: API server default {small!r} != typed model default {big!r}"
