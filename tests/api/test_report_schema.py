"""report.json's typed model and its published JSON Schema (operator/eft_api/report.schema.json)."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema

from eft_api.report import REPORT_VERSION, SCHEMA_FILE, Report, report_schema, schema_text


def test_the_checked_in_schema_is_the_generated_one() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), "run `make schemas` and commit the file"


def _report() -> dict[str, Any]:
    boot = {"gain": 0.1, "low": 0.05, "high": 0.15, "queries": 30, "resamples": 1000, "level": 0.95}
    return {
        "reportVersion": REPORT_VERSION,
        "config": {"name": "x", "runId": "g1-abcde", "baseModel": "org/m", "loss": "MultipleNegativesRanking"},
        "data": {"trainRows": 10, "files": [{"uri": "s3://b/k.jsonl", "bytes": 3, "sha256": "ab" * 32}]},
        "primaryMetric": "ndcg@10",
        "primaryDimension": 384,
        "headline": {"base": 0.5, "finetuned": 0.6, "gain": 0.1, "bootstrap": boot},
        "metrics": {"base": {"384": {"ndcg@10": 0.5}}, "finetuned": {"384": {"ndcg@10": 0.6}}, "delta": {}},
        "timings": {"train": 1.0},
        "training": {"steps": 3, "finalLoss": None},
        "hardware": {"cpus": 2},
        "promotion": {"rejected": False, "reasons": []},
    }


def test_a_report_round_trips_with_its_keys_unchanged() -> None:
    doc = _report()
    rep = Report.model_validate(doc)
    assert rep.headline.bootstrap.queries == 30 and rep.data.files[0].bytes == 3 and rep.config.run_id == "g1-abcde"
    assert json.loads(rep.to_json()) == doc  # None values and the open sections' keys kept as written
    jsonschema.validate(doc, report_schema())


def test_the_schema_refuses_what_readers_cannot_use() -> None:
    doc = _report()
    del doc["headline"]["bootstrap"]
    errors = list(jsonschema.Draft202012Validator(report_schema()).iter_errors(doc))
    assert errors and "bootstrap" in errors[0].message


def test_the_markdown_speaks_words() -> None:
    """No raw camelCase key in report.md (the trainer's renderer)."""
    import pytest

    render = pytest.importorskip("eft_trainer.report").render_markdown
    doc = _report()
    doc["data"].update({"trainRowsRead": 12, "evalDuplicatesDropped": 1, "leakedPositivesLeftOut": 0})
    doc["training"].update({"pairsPerSecond": 11.5, "resumedFromStep": 0})
    md = render(Report.model_validate(doc))
    keys = [line.split(":")[0] for line in md.splitlines() if line.startswith("- ")]
    assert keys and not [k for k in keys if re.search(r"[a-z][A-Z]", k)], keys
    assert "- train rows read: 12" in md and "- pairs per second: 11.5" in md


def undescribed(schema: dict[str, Any]) -> list[str]:
    """Every property of every object in ``schema`` (its models under ``$defs`` too) without a description. Pure."""
    models = {"Report": schema, **schema.get("$defs", {})}
    return sorted(
        f"{model}.{name}"
        for model, node in models.items()
        for name, prop in node.get("properties", {}).items()
        if not str(prop.get("description", "")).strip()
    )


def test_every_property_of_the_published_schema_says_what_it_means() -> None:
    """The generated reference (docs/reference/report.md) teaches only what the descriptions say."""
    published = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert undescribed(published) == []


def test_a_property_without_a_description_is_found() -> None:
    schema = {
        "properties": {"a": {"type": "string", "description": "A."}, "b": {"type": "integer"}},
        "$defs": {"M": {"properties": {"c": {"$ref": "#/$defs/N", "description": " "}}}},
    }
    assert undescribed(schema) == ["M.c", "Report.b"]
