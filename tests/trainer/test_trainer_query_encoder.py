"""``method: queryEncoder`` end to end on CPU against SeaweedFS: the base model as the frozen document tower,
a trained copy as the query tower, published as one stock sentence-transformers model (a Router).

The central promise is checked bit for bit: the published model's document embeddings ARE the base model's
(an existing index stays valid), its document tower's weights are the base model's file, and a run stopped by
SIGTERM mid-epoch resumes on a fresh pod to the same query tower as a run that was never interrupted.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from trainer_helpers import (
    HUB_ID,
    download_prefix,
    env,
    keys,
    make_cfg,
    s3_json,
    stdlib_pairs,
    tiny_spec,
    upload_pairs,
)

from eft_api.contract import ExitCode, TerminationMessage
from eft_cli.run import run_config
from eft_devtools.local_s3 import LocalS3

pytestmark = pytest.mark.slow

PAIRS = 110


def _spec(bucket: str, endpoint: str) -> dict[str, Any]:
    spec = tiny_spec(
        bucket,
        endpoint,
        method="queryEncoder",
        epochs=2,
        learningRate=5e-5,
        matryoshkaDims=[384, 128],
        hardNegatives={"enabled": True, "count": 1},
        earlyStopping={"validationSplit": 0.1, "patience": 2},
    )
    return spec


@pytest.fixture(scope="module")
def published(s3_server: LocalS3, tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> dict[str, Any]:
    bucket = "e2e-encoder"
    s3_server.create_bucket(bucket)
    upload_pairs(s3_server, bucket, stdlib_pairs(PAIRS))
    cfg = make_cfg(_spec(bucket, s3_server.endpoint), tmp_path_factory.mktemp("work"), model_dir, name="enc")
    with env(s3_server.env()):
        code, msg = run_config(cfg)
    prefix = cfg.run.output_prefix.split("/", 3)[3]
    local = download_prefix(s3_server, bucket, prefix, tmp_path_factory.mktemp("published"))
    return {"bucket": bucket, "cfg": cfg, "code": code, "msg": msg, "prefix": prefix, "local": local}


def test_run_succeeds_and_tells_serving_about_two_towers(published: dict[str, Any]) -> None:
    msg: TerminationMessage = published["msg"]
    assert published["code"] == ExitCode.SUCCEEDED, msg
    assert msg.index is not None and msg.index.reindex_required is False and msg.index.normalized
    local = published["local"]
    manifest = json.loads((local / "manifest.json").read_text())
    index = manifest["index"]
    assert index["reindexRequired"] is False and index["embeddingDimension"] == 384
    serving = index["serving"]
    assert serving["towers"] == 2 and serving["queryTowerParameters"] == serving["documentTowerParameters"] > 20e6
    rep = json.loads((local / "report.json").read_text())
    assert rep["index"] == index and rep["config"]["method"] == "queryEncoder"
    assert rep["data"]["corpusEmbeddingsReused"] is True  # the document side did not change: not re-embedded
    tr = rep["training"]
    assert tr["towers"] == 2 and tr["hardNegativeColumns"] == 1 and tr["validationRows"] >= 8
    curve = tr["validationCurve"]
    assert [p["epoch"] for p in curve][:2] == [0, 1] and all("validationNdcg@10" in p for p in curve)
    assert tr["bestEpoch"] in [p["epoch"] for p in curve]
    assert tr["epochsRun"] == max(p["epoch"] for p in curve) <= 2  # never more epochs than the spec asks
    assert "Validation curve" in (local / "report.md").read_text()
    card = (local / "model" / "README.md").read_text()
    assert "No re-index needed" in card and "two towers" in card


def test_document_embeddings_equal_the_base_models_bit_for_bit(published: dict[str, Any], model_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    base = SentenceTransformer(str(model_dir / HUB_ID), device="cpu")
    tuned = SentenceTransformer(str(published["local"] / "model"), device="cpu")  # stock loading
    assert type(tuned[0]).__name__ == "Router" and len(tuned) == 1
    assert tuned.max_seq_length == 32  # the run's model.maxSeqLength, which the index was built with
    base.max_seq_length = 32
    passages = [p["answer"] for p in stdlib_pairs(PAIRS)]  # every passage of the corpus, test split included
    b = base.encode_document(passages, batch_size=32)
    for got in (tuned.encode_document(passages, batch_size=32), tuned.encode(passages, batch_size=32)):
        assert got.dtype == b.dtype and got.shape == b.shape
        assert got.tobytes() == b.tobytes()
    queries = [p["question"] for p in stdlib_pairs(PAIRS)][:20]
    q = tuned.encode_query(queries)
    assert not np.allclose(q, base.encode_query(queries), atol=1e-4)  # the query tower trained
    assert np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_document_tower_is_the_base_models_weights_file(published: dict[str, Any], model_dir: Path) -> None:
    from safetensors.numpy import load_file

    model = published["local"] / "model"
    (doc,) = model.glob("document_0_*")
    (query,) = model.glob("query_0_*")
    base = load_file(str(model_dir / HUB_ID / "model.safetensors"))
    d, q = load_file(str(doc / "model.safetensors")), load_file(str(query / "model.safetensors"))
    assert set(d) <= set(base) and all(np.array_equal(base[k], d[k]) for k in d)
    assert (
        hashlib.sha256(b"".join(d[k].tobytes() for k in sorted(d))).hexdigest()
        == hashlib.sha256(b"".join(base[k].tobytes() for k in sorted(d))).hexdigest()
    )
    assert any(not np.array_equal(base[k], q[k]) for k in q)


def test_sigterm_mid_epoch_then_the_retry_publishes_the_same_weights(
    published: dict[str, Any], s3_server: LocalS3, tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.numpy import load_file

    import eft_trainer.methods.query_encoder as qe

    bucket = published["bucket"]
    cfg = make_cfg(_spec(bucket, s3_server.endpoint), tmp_path / "pod1", model_dir, name="enc-sigterm")
    step = qe.encoder_step
    calls = [0]

    def sigterm_at_third(*args: Any, **kw: Any) -> float:
        calls[0] += 1
        if calls[0] == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # the kubelet's SIGTERM, arriving mid-step
        return step(*args, **kw)

    before = signal.getsignal(signal.SIGTERM)
    with env(s3_server.env()), monkeypatch.context() as m:
        m.setattr(qe, "encoder_step", sigterm_at_third)
        code, msg = run_config(cfg)
    assert signal.getsignal(signal.SIGTERM) == before
    assert code == 1 and msg is not None and "SIGTERM at step 3" in msg.message, msg
    prefix = cfg.run.output_prefix.split("/", 3)[3]
    assert prefix + "checkpoints/query-encoder/state.pt" in keys(s3_server, bucket, prefix + "checkpoints/")
    assert prefix + "manifest.json" not in keys(s3_server, bucket, prefix)

    retry = cfg.model_copy(update={"settings": cfg.settings.model_copy(update={"work_dir": str(tmp_path / "pod2")})})
    with env(s3_server.env()):
        code, msg = run_config(retry)
    assert code == ExitCode.SUCCEEDED, msg
    rep = s3_json(s3_server, bucket, prefix + "report.json")
    assert rep["training"]["resumedFromStep"] == 3 and rep["training"]["embeddingsReused"] is True
    local = download_prefix(s3_server, bucket, prefix + "model/", tmp_path / "model")
    for tower in ("query_0_Transformer", "document_0_Transformer"):
        first = load_file(str(published["local"] / "model" / tower / "model.safetensors"))
        again = load_file(str(local / tower / "model.safetensors"))
        assert first.keys() == again.keys()
        assert all(np.allclose(first[k], again[k], atol=1e-6) for k in first), tower
    assert (
        rep["training"]["validationCurve"]
        == json.loads((published["local"] / "report.json").read_text())["training"]["validationCurve"]
    )


def test_two_processes_share_one_document_cache_and_publish_one_model(
    s3_server: LocalS3, s3_bucket: str, tmp_path: Path, model_dir: Path
) -> None:
    """Under torchrun (gloo on CPU): the first process embeds the training texts once for both, each trains on
    its share of every epoch's batches with averaged gradients, and one two-tower model is published whose
    document side is still the base model."""
    from safetensors.numpy import load_file
    from test_trainer_distributed import _torchrun

    upload_pairs(s3_server, s3_bucket, stdlib_pairs(PAIRS))
    spec = _spec(s3_bucket, s3_server.endpoint)
    spec["training"]["hardNegatives"] = {"enabled": False}
    cfg = make_cfg(spec, tmp_path / "pod", model_dir, name="enc-ddp")
    proc, term = _torchrun(cfg, s3_server, tmp_path / "pod", ["--module", "eft_trainer"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    msg = TerminationMessage.parse(term.read_text())
    assert msg is not None and msg.outcome == "Succeeded", term.read_text()
    assert "joined the process group as rank 1 of 2" in proc.stderr
    prefix = cfg.run.output_prefix.split("/", 3)[3]
    rep = s3_json(s3_server, s3_bucket, prefix + "report.json")
    assert rep["hardware"]["processes"] == 2 and rep["index"]["reindexRequired"] is False
    assert rep["training"]["samples"] == rep["training"]["steps"] * 8 * 2  # a batch of 8 on each process
    # One process embedded: the cache holds one array per side, written once.
    assert len(keys(s3_server, s3_bucket, prefix + "checkpoints/adapter-embeddings/")) == 2
    local = download_prefix(s3_server, s3_bucket, prefix + "model/document_0_Transformer/", tmp_path / "doc")
    base = load_file(str(model_dir / HUB_ID / "model.safetensors"))
    d = load_file(str(local / "model.safetensors"))
    assert all(np.array_equal(base[k], d[k]) for k in d)
