"""`eft run`: the resource resolves to the run config a Job would get, with the local overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from eft_api.contract import RunConfig, run_id, spec_digest
from eft_cli.main import main
from eft_cli.run import resolve, summary

REPO = Path(__file__).resolve().parents[2]


def quickstart() -> dict:  # type: ignore[type-arg]
    doc = yaml.safe_load((REPO / "examples/quickstart.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def test_resolve_applies_overrides(tmp_path: Path) -> None:
    cfg = resolve(
        quickstart(), s3_endpoint="http://127.0.0.1:9000", work_dir=str(tmp_path), model_dir=str(tmp_path / "m")
    )
    assert cfg.spec.storage.endpoint == "http://127.0.0.1:9000" and cfg.spec.storage.path_style
    assert cfg.run.namespace == "default" and cfg.run.name == "quickstart"
    assert cfg.run.run_id == run_id("local-default-quickstart", 1, spec_digest(cfg.spec))
    assert cfg.run.output_prefix == f"s3://eft-demo/runs/default/quickstart/{cfg.run.run_id}/"
    assert cfg.settings.work_dir == str(tmp_path) and cfg.settings.model_cache_dir == str(tmp_path / "m")
    assert cfg.settings.metrics_port == 0
    # The run config survives the JSON round trip the Job's ConfigMap makes.
    assert RunConfig.from_json(cfg.to_json()) == cfg


def test_resolve_run_id_override() -> None:
    cfg = resolve(quickstart(), run_id="manual-1")
    assert cfg.run.run_id == "manual-1" and cfg.run.output_prefix.endswith("/quickstart/manual-1/")


def test_invalid_resource_names_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = quickstart()
    doc["spec"]["training"]["loss"] = "CoSENT"
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(doc))
    assert main(["run", str(f)]) == 2
    err = capsys.readouterr().err
    assert "spec.training.loss" in err and "CoSENT" in err


def test_summary_without_message() -> None:
    assert "no termination message" in summary(1, None)


def test_an_edited_spec_gets_a_new_run_id_and_prefix(tmp_path: Path) -> None:
    """eft run keeps uid and generation fixed: the spec's hash alone must move the run (never an old result)."""
    doc = quickstart()
    first = resolve(doc, work_dir=str(tmp_path))
    doc["spec"].setdefault("training", {})["epochs"] = 2
    second = resolve(doc, work_dir=str(tmp_path))
    assert first.run.run_id != second.run.run_id and first.run.run_id.startswith("g1-")
    assert first.run.output_prefix != second.run.output_prefix
    doc["spec"]["training"]["epochs"] = 1
    assert resolve(doc, work_dir=str(tmp_path)).run.run_id == first.run.run_id
