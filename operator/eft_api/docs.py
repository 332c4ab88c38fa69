"""The README's reference table of spec fields, generated from the CRD (``make docs`` rewrites it; a test
keeps it in sync)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from eft_api.schema import iter_fields, openapi_schema

BEGIN = "<!-- spec-fields:begin (generated from crds/embeddingfinetunes.yaml by `make docs`) -->"
END = "<!-- spec-fields:end -->"


def _type(schema: dict[str, Any]) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return "quantity"
    t = str(schema.get("type", "any"))
    if t == "array":
        return f"[]{_type(schema.get('items', {}))}"
    if t == "object" and isinstance(schema.get("additionalProperties"), dict):
        return "map[string]string"
    return t


def _constraints(schema: dict[str, Any]) -> str:
    parts = []
    if "enum" in schema:
        parts.append("one of " + ", ".join(f"`{v}`" if v != "" else '`""`' for v in schema["enum"]))
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if lo is not None or hi is not None:
        left = "(" if schema.get("exclusiveMinimum") else "["
        parts.append(f"{left}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]")
    if "maxItems" in schema:
        parts.append(f"at most {schema['maxItems']} items")
    return "; ".join(parts)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _required_paths(node: dict[str, Any], path: str = "spec") -> set[str]:
    out = {f"{path}.{name}" for name in node.get("required", [])}
    for key, sub in node.get("properties", {}).items():
        out |= _required_paths(sub, f"{path}.{key}")
        if isinstance(sub.get("items"), dict):
            out |= _required_paths(sub["items"], f"{path}.{key}[]")
    return out


def field_table() -> str:
    required = _required_paths(openapi_schema()["properties"]["spec"])
    rows = ["| Field | Type | Default | Allowed | Description |", "|---|---|---|---|---|"]
    for path, schema in iter_fields():
        default = f"`{json.dumps(schema['default'])}`" if "default" in schema else ""
        rows.append(
            f"| `{path}` | {_type(schema)}{' (required)' if path in required else ''} | {default} | {_cell(_constraints(schema))} | "
            f"{_cell(schema.get('description', ''))} |"
        )
    return "\n".join(rows)


def render_section() -> str:
    return f"{BEGIN}\n{field_table()}\n{END}"


def update_readme(readme: Path) -> bool:
    """Rewrite the generated section of ``readme``; return whether it changed."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    new = text[:start] + render_section() + text[end:]
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    changed = update_readme(Path(sys.argv[1] if len(sys.argv) > 1 else "README.md"))
    print("README.md field table " + ("updated" if changed else "already up to date"))
