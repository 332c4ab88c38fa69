"""The CRD's structural schema, read from ``crds/embeddingfinetunes.yaml``, as the API server would use it.

* :func:`openapi_schema` returns the v1alpha1 ``openAPIV3Schema``.
* :func:`structural_problems` checks a resource with ``jsonschema`` (OpenAPI 3.0 spellings converted),
  reporting each problem with its field path, as ``kubectl apply`` would reject it.
* :func:`iter_fields` walks every spec field with its schema (for docs and tests).

The CRD's CEL rules are mirrored by the typed model (:mod:`eft_api.spec`); a real API server checks
both agree (``tests/api/test_api_server.py``).

Pure (file reading aside): no Kubernetes client.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from eft_api.spec import API_VERSION, PATTERN_HINTS, SpecProblem

CRD_FILE = "embeddingfinetunes.yaml"


def crd_path() -> Path:
    """Where the CRD lives: ``$EFT_CRD_PATH``, else ``crds/`` of the source tree, else beside this module."""
    env = os.environ.get("EFT_CRD_PATH")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "crds" / CRD_FILE, here.parent / CRD_FILE):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"cannot find {CRD_FILE}: set EFT_CRD_PATH to the CRD file")


@functools.cache
def load_crd() -> dict[str, Any]:
    with crd_path().open(encoding="utf-8") as fh:
        crd: dict[str, Any] = yaml.safe_load(fh)
    return crd


def openapi_schema(version: str = API_VERSION) -> dict[str, Any]:
    for v in load_crd()["spec"]["versions"]:
        if v["name"] == version:
            schema: dict[str, Any] = v["schema"]["openAPIV3Schema"]
            return schema
    raise KeyError(f"the CRD has no version {version}")


def to_jsonschema(node: Any) -> Any:
    """Convert an OpenAPI 3.0 structural schema to JSON Schema 2020-12 (for ``jsonschema``)."""
    if isinstance(node, list):
        return [to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("default", "description", "example"):
            continue
        if key in ("properties", "patternProperties"):
            out[key] = {k: to_jsonschema(v) for k, v in value.items()}
        elif key == "exclusiveMinimum" and value is True:
            out["exclusiveMinimum"] = node["minimum"]
        elif key == "exclusiveMaximum" and value is True:
            out["exclusiveMaximum"] = node["maximum"]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and value is False:
            continue
        else:
            out[key] = to_jsonschema(value)
    if node.get("exclusiveMinimum") is True:
        out.pop("minimum", None)
    if node.get("exclusiveMaximum") is True:
        out.pop("maximum", None)
    if node.get("x-kubernetes-int-or-string"):
        # pattern applies to the string form only, as in Kubernetes
        pattern = out.pop("pattern", None)
        out.pop("anyOf", None)
        string: dict[str, Any] = {"type": "string"}
        if pattern:
            string["pattern"] = pattern
        out["anyOf"] = [{"type": "integer"}, string]
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    if node.get("nullable"):
        out.pop("nullable", None)
        if "type" in out:
            out["type"] = [out["type"], "null"]
    # Kubernetes prunes unknown fields of structural schemas; `kubectl apply` (server-side field
    # validation, strict) refuses them. Treat them as errors, as the typed model does.
    if (
        node.get("type") == "object"
        and "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def _validator() -> Draft202012Validator:
    schema = to_jsonschema(openapi_schema())
    schema["additionalProperties"] = False
    return Draft202012Validator(schema)


def _json_path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(document)"


def structural_problems(doc: Any) -> list[SpecProblem]:
    """Problems the CRD's structural schema finds in a whole resource, each with its field path."""
    problems = []
    for err in sorted(_validator().iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        path = _json_path(err.absolute_path)
        if err.validator == "additionalProperties" and err.validator_value is False:
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            for name in extra:
                problems.append(
                    SpecProblem(path=f"{path}.{name}" if err.absolute_path else name, message="unknown field")
                )
            continue
        if err.validator == "required":
            missing = [n for n in err.validator_value if isinstance(err.instance, dict) and n not in err.instance]
            for name in missing:
                where = f"{path}.{name}" if err.absolute_path else name
                problems.append(SpecProblem(path=where, message="required field is missing"))
            continue
        problems.append(SpecProblem(path=path, message=_message(err)))
    return problems


def _message(err: Any) -> str:
    if err.validator == "pattern":
        hint = PATTERN_HINTS.get(err.validator_value)
        if hint:
            return f"{err.instance!r}: {hint}"
    if err.validator == "anyOf" and any(s.get("type") == "integer" for s in err.validator_value):
        return f"{err.instance!r} must be an integer or a quantity string (such as 4, 500m or 16Gi)"
    return str(err.message)


def iter_fields(node: dict[str, Any] | None = None, path: str = "spec") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every field under ``path`` (default ``spec``) with its schema, depth first: for docs and tests."""
    if node is None:
        node = openapi_schema()["properties"]["spec"]
    for key, sub in node.get("properties", {}).items():
        here = f"{path}.{key}"
        yield here, sub
        yield from iter_fields(sub, here)
        if isinstance(sub.get("items"), dict) and "properties" in sub["items"]:
            yield from iter_fields(sub["items"], f"{here}[]")
