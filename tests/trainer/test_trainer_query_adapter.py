"""``method: queryAdapter`` end to end on CPU against SeaweedFS: MiniLM frozen, an adapter on the query side.

One run is shared by the assertions (module-scoped fixture). The central promise is checked bit for bit:
the published model's document embeddings ARE the base model's, so an existing index stays valid.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from trainer_helpers import HUB_ID, download_prefix, env, keys, make_cfg, spec_dict, stdlib_pairs, upload_pairs

from eft_api.contract import ExitCode, Reason, TerminationMessage
from eft_cli.run import run_config
from eft_devtools.local_s3 import LocalS3

pytestmark = pytest.mark.slow

TEXTS = [
    "json.dumps",
    "Serialize obj to a JSON formatted str.",
    "Return a new list containing all items from the iterable in ascending order, and a longer tail of words.",
    "x",
]


def _get(s3: LocalS3, bucket: str, key: str) -> bytes:
    body: bytes = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


@pytest.fixture(scope="module")
def published(s3_server: LocalS3, tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> dict[str, Any]:
    bucket = "e2e-adapter"
    s3_server.create_bucket(bucket)
    upload_pairs(s3_server, bucket, stdlib_pairs(200))
    work = tmp_path_factory.mktemp("work")
    spec = spec_dict(bucket, s3_server.endpoint, method="queryAdapter", epochs=3)
    cfg = make_cfg(spec, work, model_dir)
    with env(s3_server.env()):
        code, msg = run_config(cfg)
    prefix = cfg.run.output_prefix.split("/", 3)[3]
    local = download_prefix(s3_server, bucket, prefix, tmp_path_factory.mktemp("published"))
    return {"bucket": bucket, "cfg": cfg, "code": code, "msg": msg, "prefix": prefix, "local": local}


def test_run_succeeds_and_says_no_reindex(published: dict[str, Any]) -> None:
    msg: TerminationMessage = published["msg"]
    assert published["code"] == ExitCode.SUCCEEDED, msg
    assert msg.reason == Reason.SUCCEEDED and msg.headline is not None
    assert msg.index is not None and msg.index.reindex_required is False
    assert msg.index.dimension == 384 and msg.index.similarity == "cosine" and msg.index.normalized
    assert msg.artifacts is not None and msg.artifacts.adapter and msg.artifacts.adapter.endswith("/adapter/")
    assert len(msg.to_json().encode()) <= 4096


def test_document_embeddings_equal_the_base_models_bit_for_bit(published: dict[str, Any], model_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    base = SentenceTransformer(str(model_dir / HUB_ID))
    tuned = SentenceTransformer(str(published["local"] / "model"))
    assert type(tuned[-1]).__name__ == "Router"
    b = base.encode(TEXTS, batch_size=8)
    for got in (tuned.encode_document(TEXTS, batch_size=8), tuned.encode(TEXTS, batch_size=8)):
        assert got.dtype == b.dtype and got.shape == b.shape
        assert got.tobytes() == b.tobytes()
    # ... while queries go through the trained adapter: they moved, and stay unit vectors.
    q = tuned.encode_query(TEXTS, batch_size=8)
    assert not np.allclose(q, base.encode_query(TEXTS, batch_size=8), atol=1e-4)
    assert np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)


def test_only_the_adapter_trained_and_it_is_published_alone(published: dict[str, Any], model_dir: Path) -> None:
    from safetensors.numpy import load_file

    base = load_file(str(model_dir / HUB_ID / "model.safetensors"))
    tuned = load_file(str(published["local"] / "model" / "model.safetensors"))
    # Every weight of the encoder is the base model's (the saved file leaves out the position_ids buffer).
    assert set(tuned) <= set(base) and set(base) - set(tuned) <= {"embeddings.position_ids"}
    assert all(np.array_equal(base[k], tuned[k]) for k in tuned)
    adapter = published["local"] / "adapter"
    size = sum(p.stat().st_size for p in adapter.rglob("*") if p.is_file())
    assert (adapter / "router_config.json").is_file() and size < 1_000_000
    weights = next(adapter.rglob("model.safetensors"))
    (w,) = [v for k, v in load_file(str(weights)).items() if k.endswith("weight")]
    assert w.shape == (384, 384) and not np.allclose(w, np.eye(384), atol=1e-4)  # trained away from the identity


def test_manifest_report_and_card_tell_the_index_owner(published: dict[str, Any], s3_server: LocalS3) -> None:
    local = published["local"]
    manifest = json.loads((local / "manifest.json").read_text())
    listed = {o["key"] for o in manifest["objects"]}
    assert {"model/modules.json", "adapter/router_config.json", "report.json"} <= listed
    index = manifest["index"]
    assert index["reindexRequired"] is False and index["embeddingDimension"] == 384
    assert index["matryoshkaDims"] == [128] and index["normalized"] is True and index["similarity"] == "cosine"
    assert index["maxSeqLength"] == 64 and "query" in index["prompts"]
    rep = json.loads((local / "report.json").read_text())
    assert rep["index"] == index and rep["config"]["method"] == "queryAdapter"
    assert rep["data"]["corpusEmbeddingsReused"] is True
    assert rep["training"]["textsEmbedded"] > 0 and rep["training"]["adapterParameters"] == 384 * 384 + 384
    assert 1 <= rep["training"]["epochsRun"] <= 3  # never more epochs than the spec asks (epochs: 3)
    boot = rep["headline"]["bootstrap"]
    assert boot["low"] <= boot["gain"] <= boot["high"]
    card = (local / "model" / "README.md").read_text()
    assert "No re-index needed" in card and "encode_query" in card


def test_a_pod_lost_after_embedding_is_followed_by_one_that_does_not_embed_again(
    s3_server: LocalS3, tmp_path: Path, model_dir: Path, published: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The expensive part of a queryAdapter run is the one pass of the frozen encoder: it is kept with the run's
    checkpoints, so the retry of a pod lost while the adapter trained (a SIGTERM, a crash) only retrains the
    adapter, and, being seeded, gets the same adapter as a run that was never interrupted."""
    from safetensors.numpy import load_file

    import eft_trainer.methods.query_adapter as qa

    bucket = "e2e-adapter-retry"
    s3_server.create_bucket(bucket)
    upload_pairs(s3_server, bucket, stdlib_pairs(200))
    cfg = make_cfg(spec_dict(bucket, s3_server.endpoint, method="queryAdapter", epochs=3), tmp_path / "w1", model_dir)

    def lost(*args: Any, **kw: Any) -> Any:
        raise RuntimeError("the pod was lost while the adapter trained")

    with env(s3_server.env()), monkeypatch.context() as m:
        m.setattr(qa, "contrastive_loss", lost)
        code, msg = run_config(cfg)
    assert code != 0 and msg.outcome == "Failed"
    prefix = cfg.run.output_prefix.split("/", 3)[3]
    kept = keys(s3_server, bucket, prefix + "checkpoints/adapter-embeddings/")
    assert len(kept) == 2, kept  # the query side and the document side

    retry = cfg.model_copy(update={"settings": cfg.settings.model_copy(update={"work_dir": str(tmp_path / "w2")})})
    with env(s3_server.env()):
        code, msg = run_config(retry)
    assert (code, msg.outcome) == (ExitCode.SUCCEEDED, "Succeeded"), msg
    rep = json.loads(_get(s3_server, bucket, prefix + "report.json"))
    assert rep["training"]["embeddingsReused"] is True and rep["training"]["textsEmbedded"] == 0
    local = download_prefix(s3_server, bucket, prefix + "adapter/", tmp_path / "adapter")
    first = load_file(str(next((published["local"] / "adapter").rglob("model.safetensors"))))
    again = load_file(str(next(local.rglob("model.safetensors"))))
    # The same choice as the uninterrupted run (which embedded on its own: its weights may differ in float noise
    # that Adam amplifies), and exactly the same adapter as any run trained from the same kept embeddings.
    rep_first = json.loads((published["local"] / "report.json").read_text())["training"]
    assert (rep["training"]["learningRate"], rep["training"]["bestEpoch"]) == (
        rep_first["learningRate"],
        rep_first["bestEpoch"],
    )
    other = make_cfg(
        spec_dict(bucket, s3_server.endpoint, method="queryAdapter", epochs=3), tmp_path / "w3", model_dir, name="t2"
    )
    other_prefix = other.run.output_prefix.split("/", 3)[3]
    client = s3_server.client()
    for k in kept:  # the kept embeddings, as if this run's earlier pod had made them
        dest = other_prefix + k[len(prefix) :]
        client.copy_object(Bucket=bucket, Key=dest, CopySource={"Bucket": bucket, "Key": k})
    with env(s3_server.env()):
        code, msg = run_config(other)
    assert code == ExitCode.SUCCEEDED, msg
    third = download_prefix(s3_server, bucket, other_prefix + "adapter/", tmp_path / "adapter3")
    once_more = load_file(str(next(third.rglob("model.safetensors"))))
    assert first.keys() == again.keys() == once_more.keys()
    assert all(np.array_equal(again[k], once_more[k]) for k in again)
