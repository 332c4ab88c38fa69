"""spec.output.registry.mlflow against a REAL MLflow tracking server: the version, its tags, the alias moved only
on a passing gate, and an idempotent retry (eft_trainer.registry)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mlflow import MlflowClient

from eft_api.contract import (
    Artifacts,
    Headline,
    IndexSummary,
    Reason,
    RunConfig,
    TerminationMessage,
    build_run_config,
)
from eft_api.retrain import RunTrigger
from eft_api.spec import parse_spec
from eft_trainer import registry
from eft_trainer.errors import TrainerError

pytestmark = pytest.mark.slow

REPORT = {"headline": {"bootstrap": {"gain": 0.059, "low": 0.031, "high": 0.088}}}


class ReportStore:
    """Serves the published report.json (registry.read_report reads it through the run's storage)."""

    def get_bytes(self, uri: Any) -> bytes:
        return json.dumps(REPORT).encode()


def config(url: str, model: str, generation: int, **mlflow: Any) -> RunConfig:
    spec = parse_spec(
        {
            "model": {"base": "sentence-transformers/all-MiniLM-L6-v2"},
            "data": {"train": {"uri": "s3://bucket/train/", "format": "pairs"}},
            "output": {
                "uri": "s3://bucket/out/",
                "registry": {"mlflow": {"trackingUri": url, "modelName": model, **mlflow}},
            },
        }
    )
    trigger = RunTrigger("dataChange", "d1", "d1")
    return build_run_config(namespace="ml", name="search", uid="u1", generation=generation, spec=spec, trigger=trigger)


def message(cfg: RunConfig, *, passed: bool) -> TerminationMessage:
    prefix = cfg.run.output_prefix
    return TerminationMessage(
        outcome="Succeeded" if passed else "Failed",
        reason=Reason.SUCCEEDED if passed else Reason.PROMOTION_REJECTED,
        run_id=cfg.run.run_id,
        headline=Headline(primary_metric="ndcg@10", dimension=384, base=0.531, finetuned=0.59, gain=0.059),
        index=IndexSummary(reindex_required=True, dimension=384, similarity="cosine", normalized=True),
        artifacts=Artifacts(model=f"{prefix}model/" if passed else None, report=f"{prefix}report.json"),
    )


def test_registers_a_version_with_tags_moves_the_alias_and_retries_idempotently(mlflow_server: str) -> None:
    cfg = config(mlflow_server, "search-a", 1)
    msg = registry.after_publish(cfg, message(cfg, passed=True), ReportStore())
    assert msg.registry is not None and msg.registry.version == "1" and msg.registry.alias == "champion"
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    v = client.get_model_version("search-a", "1")
    assert v.source == f"{cfg.run.output_prefix}model/"
    assert v.tags["eft.runId"] == cfg.run.run_id
    assert v.tags["eft.baseModel"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert v.tags["eft.dataDigest"] == "d1" and v.tags["eft.trigger"] == "dataChange"
    assert (v.tags["eft.base"], v.tags["eft.finetuned"], v.tags["eft.gain"]) == ("0.531000", "0.590000", "0.059000")
    assert (v.tags["eft.gainCiLow"], v.tags["eft.gainCiHigh"]) == ("0.031000", "0.088000")
    assert v.tags["eft.reindexRequired"] == "true" and v.tags["eft.dimension"] == "384"
    assert client.get_model_version_by_alias("search-a", "champion").version == "1"

    again = registry.after_publish(cfg, message(cfg, passed=True), ReportStore())  # a retried attempt
    assert again.registry is not None and again.registry.version == "1"
    assert len(client.search_model_versions("name='search-a'")) == 1


def test_a_rejected_run_keeps_the_alias_and_is_registered_only_when_asked(mlflow_server: str) -> None:
    good = config(mlflow_server, "search-b", 1, registerRejected=True, alias="prod")
    registry.after_publish(good, message(good, passed=True), ReportStore())
    bad = config(mlflow_server, "search-b", 2, registerRejected=True, alias="prod")
    out = registry.after_publish(bad, message(bad, passed=False), ReportStore())
    assert out.registry is not None and out.registry.version == "2" and out.registry.alias is None
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    assert client.get_model_version_by_alias("search-b", "prod").version == "1"
    assert client.get_model_version("search-b", "2").tags["eft.promotion"] == "rejected"

    plain = config(mlflow_server, "search-c", 3)  # registerRejected false (the default)
    skipped = registry.after_publish(plain, message(plain, passed=False), ReportStore())
    assert skipped.registry is None
    assert client.search_registered_models("name='search-c'") == []


def test_an_unreachable_registry_is_a_retryable_failure_without_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "canary-token-123456")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    cfg = config("http://127.0.0.1:9", "search-d", 1)
    with pytest.raises(TrainerError) as err:
        registry.after_publish(cfg, message(cfg, passed=True), ReportStore())
    assert err.value.reason == Reason.REGISTRY_FAILED
    assert "search-d" in err.value.message and "canary-token-123456" not in err.value.message
