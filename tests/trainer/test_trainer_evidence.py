"""End to end: a run with a merge that repairs a guard, a model baseline and an endpoint baseline (the stand-in,
through the openai client) on its leaderboard, per-query evidence; then a re-gate of the same trained model
(only the guard's maxDrop changed) that trains 0 steps and asks the endpoint nothing (its embeddings cached)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from embeddings_standin import KEY, MODEL, EmbeddingsStandIn

from eft_api.contract import ModelReuse, Reason, baseline_key_env

BUCKET = "e2e-evidence"
GUARD = {"name": "faq", "uri": f"s3://{BUCKET}/guards/beir/", "format": "beir"}


@pytest.fixture(scope="module")
def evidence_bucket(s3_server: Any) -> str:
    from trainer_helpers import stdlib_pairs, upload_pairs

    s3_server.create_bucket(BUCKET)
    pairs = stdlib_pairs(330)
    upload_pairs(s3_server, BUCKET, pairs[:120])
    held = pairs[260:330]
    c = s3_server.client()
    corpus = "".join(json.dumps({"_id": f"d{i}", "text": p["answer"]}) + "\n" for i, p in enumerate(held))
    queries = "".join(json.dumps({"_id": f"q{i}", "text": p["question"]}) + "\n" for i, p in enumerate(held))
    qrels = "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(len(held)))
    c.put_object(Bucket=BUCKET, Key="guards/beir/corpus.jsonl", Body=corpus.encode())
    c.put_object(Bucket=BUCKET, Key="guards/beir/queries.jsonl", Body=queries.encode())
    c.put_object(Bucket=BUCKET, Key="guards/beir/qrels/test.tsv", Body=qrels.encode())
    return BUCKET


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddingsStandIn]:
    s = EmbeddingsStandIn().start()
    monkeypatch.setenv(baseline_key_env(1), KEY)
    yield s
    s.stop()


def evidence_spec(endpoint: str, emb_url: str, max_drop: float) -> dict[str, Any]:
    from trainer_helpers import tiny_spec

    spec = tiny_spec(BUCKET, endpoint, learningRate=0.01, merge={"enabled": True, "ratios": [0.001, 0.5, 1]})
    spec["evaluation"] = {
        "kValues": [1, 10],
        "primaryMetric": "ndcg@10",
        "gate": {"minGain": -1, "mustBeat": ["api"]},
        "guards": [{**GUARD, "maxDrop": max_drop}],
        "baselines": [
            {"name": "mini", "model": {"base": "sentence-transformers/all-MiniLM-L6-v2", "maxSeqLength": 16}},
            {"name": "api", "endpoint": {"url": emb_url, "model": MODEL, "batchSize": 64}},
        ],
    }
    return spec


def _get(s3: Any, key: str) -> bytes:
    body: bytes = s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return body


@pytest.mark.slow
def test_merge_repairs_a_guard_and_a_re_gate_trains_nothing(
    s3_server: Any, evidence_bucket: str, standin: EmbeddingsStandIn, tmp_path: Path, model_dir: Path
) -> None:
    """learningRate 0.01 wrecks MiniLM on the guard: ratio 1 fails maxDrop 0.05, ratio 0.001 passes and is published."""
    from trainer_helpers import env, keys, make_cfg

    from eft_cli.run import run_config

    spec = evidence_spec(s3_server.endpoint, standin.url, max_drop=0.05)
    cfg = make_cfg(spec, tmp_path / "one", model_dir, name="evidence")
    with env(s3_server.env()):
        _code, msg = run_config(cfg)
    assert msg is not None and msg.reason == Reason.SUCCEEDED, msg
    assert msg.merge_ratio is not None and msg.merge_ratio < 1
    prefix = cfg.run.output_prefix.split("/", 3)[3]
    rep = json.loads(_get(s3_server, prefix + "report.json"))
    points = {p["ratio"]: p for p in rep["merge"]["points"]}
    assert not points[1]["guardsPassed"] and points[msg.merge_ratio]["guardsPassed"]
    assert rep["merge"]["chosen"] == msg.merge_ratio and rep["index"]["mergeRatio"] == msg.merge_ratio
    manifest = json.loads(_get(s3_server, prefix + "manifest.json"))
    assert manifest["index"]["mergeRatio"] == msg.merge_ratio
    assert f"ratio {msg.merge_ratio:g}" in _get(s3_server, prefix + "model/README.md").decode()
    published = keys(s3_server, BUCKET, prefix)
    assert any(k.startswith(prefix + "checkpoints/trained-model/") for k in published)
    assert {prefix + "leaderboard.png", prefix + "merge.png"} <= set(published)
    # The leaderboard: base, fine-tuned, both baselines on the evaluation set and the guard.
    board = rep["leaderboard"]
    assert {r["name"] for r in board["sets"]["eval"]} == {"base", "fine-tuned", "mini", "api"}
    assert {r["name"] for r in board["sets"]["faq"]} == {"base", "fine-tuned", "mini", "api"}
    assert board["cost"]["api"]["requests"] > 0 and board["cost"]["api"]["cached"] is False
    assert sorted(b.name for b in msg.baselines or []) == ["api", "mini"]
    assert {"eval", "faq"} <= set(rep["perQuery"]) and rep["perQuery"]["faq"]["cutoff"] == 10
    md = _get(s3_server, prefix + "report.md").decode()
    assert "## Leaderboard" in md and "## Merge (WiSE-FT)" in md and "## Per-query evidence" in md
    assert msg.artifacts is not None and msg.artifacts.trained_model is not None

    # Re-gate: only maxDrop changed; the trained model of the first run is reused, no step is trained.
    requests = len(standin.requests)
    spec2 = evidence_spec(s3_server.endpoint, standin.url, max_drop=1.0)
    cfg2 = make_cfg(spec2, tmp_path / "two", model_dir, name="evidence")
    cfg2 = cfg2.model_copy(
        update={"reuse_model_from": ModelReuse(run_id=cfg.run.run_id, uri=msg.artifacts.trained_model)}
    )
    assert cfg2.run.run_id != cfg.run.run_id
    with env(s3_server.env()):
        _code2, msg2 = run_config(cfg2)
    assert msg2 is not None and msg2.reason == Reason.SUCCEEDED, msg2
    assert msg2.reused_model_from == cfg.run.run_id
    rep2 = json.loads(_get(s3_server, cfg2.run.output_prefix.split("/", 3)[3] + "report.json"))
    assert rep2["training"]["steps"] == 0 and rep2["reusedModelFrom"]["runId"] == cfg.run.run_id
    assert rep2["merge"]["chosen"] is not None  # every ratio passes maxDrop 1: the best in-domain one
    assert len(standin.requests) == requests  # the endpoint's embeddings came from the cache
    assert rep2["leaderboard"]["cost"]["api"] == {"requests": 0, "cached": True}
