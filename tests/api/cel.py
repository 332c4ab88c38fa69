"""Evaluate the CRD's CEL rules (x-kubernetes-validations) with cel-python, as the API server would.

Kubernetes adds list functions to standard CEL; the one our rules use, ``isSorted()``, is defined here
with Kubernetes' semantics (ascending, equal neighbours allowed).
"""

from __future__ import annotations

from typing import Any

import celpy
from celpy import celtypes

from eft_api.schema import CelRule, apply_defaults, cel_rules


def _is_sorted(items: Any) -> celtypes.BoolType:
    values = list(items)
    return celtypes.BoolType(all(values[i] <= values[i + 1] for i in range(len(values) - 1)))


_ENV = celpy.Environment()


def evaluate(rule: str, self_obj: Any) -> bool:
    program = _ENV.program(_ENV.compile(rule), functions={"isSorted": _is_sorted})
    result = program.evaluate({"self": celpy.json_to_cel(self_obj)})
    if isinstance(result, Exception):
        raise result
    return bool(result)


def _at(obj: Any, path: tuple[str, ...]) -> list[Any]:
    """The values a rule at ``path`` sees (``[]`` steps into every list item); absent values are skipped."""
    values = [obj]
    for part in path:
        nxt: list[Any] = []
        for v in values:
            if part == "[]" and isinstance(v, list):
                nxt.extend(v)
            elif isinstance(v, dict) and part in v:
                nxt.append(v[part])
        values = nxt
    return values


def failing_rules(doc: dict[str, Any]) -> list[tuple[CelRule, str]]:
    """Rules that fail on the defaulted ``doc``, with the field path each reports."""
    defaulted = apply_defaults(doc)
    failed = []
    for rule in cel_rules():
        for value in _at(defaulted, rule.path):
            if not evaluate(rule.rule, value):
                where = ".".join(p for p in rule.path if p != "[]") + (rule.field_path or "")
                failed.append((rule, where))
    return failed
