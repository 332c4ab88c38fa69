"""One test per error class of the issue's point 5: reason, exit code, speed, no secret, nothing published."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from trainer_helpers import env, keys, make_cfg, spec_dict, stdlib_pairs, upload_pairs

from eft_api.contract import ExitCode, Reason, RunConfig
from eft_api.spec import Loss
from eft_cli.run import run_config
from eft_devtools.local_s3 import LocalS3

pytestmark = pytest.mark.slow

CANARY = "canarySECRETvalue0123456789"


@pytest.fixture(scope="module")
def corpus_bucket(s3_server: LocalS3) -> str:
    bucket = "e2e-failures"
    s3_server.create_bucket(bucket)
    upload_pairs(s3_server, bucket, stdlib_pairs(60))
    c = s3_server.client()
    c.put_object(Bucket=bucket, Key="corpus/empty.jsonl", Body=b"")
    c.put_object(
        Bucket=bucket,
        Key="corpus/bad.jsonl",
        Body=b'{"question": "a", "answer": "b"}\n{"question": "c", "answer": "d"}\n{"question": "e", "answer": \n',
    )
    c.put_object(Bucket=bucket, Key="corpus/nocol.jsonl", Body=b'{"question": "a", "text": "b"}\n')
    return bucket


def run(cfg: RunConfig, s3: LocalS3, creds: dict[str, str] | None = None) -> tuple[int, Any]:
    """The trainer's exit code and termination message (how fast it fails is a benchmark's business, not a
    test's: a loaded CI machine makes any bound flaky)."""
    with env(creds or s3.env()):
        return run_config(cfg)


def assert_failed(
    s3: LocalS3, bucket: str, cfg: RunConfig, code: int, msg: Any, reason: Reason, exit_: ExitCode
) -> None:
    assert msg is not None and msg.outcome == "Failed", msg
    assert msg.reason == reason, msg
    assert code == exit_
    assert CANARY not in msg.to_json()
    prefix = cfg.run.output_prefix.split("/", 3)[3]
    published = [k for k in keys(s3, bucket, prefix) if "/checkpoints/" not in k] if bucket else []
    assert published == [], published


def test_wrong_model_id(s3_server: LocalS3, corpus_bucket: str, tmp_path: Path, model_dir: Path) -> None:
    spec = spec_dict(corpus_bucket, s3_server.endpoint)
    spec["model"]["base"] = "no-such-org/no-such-model"
    cfg = make_cfg(spec, tmp_path, model_dir, name="wrong-model")
    with env({"HF_HUB_OFFLINE": "1"}):
        code, msg = run(cfg, s3_server)
    assert_failed(s3_server, corpus_bucket, cfg, code, msg, Reason.MODEL_NOT_FOUND, ExitCode.BAD_INPUT)
    assert "no-such-org/no-such-model" in msg.message


def test_s3_model_base_missing_prefix(s3_server: LocalS3, corpus_bucket: str, tmp_path: Path, model_dir: Path) -> None:
    spec = spec_dict(corpus_bucket, s3_server.endpoint)
    spec["model"]["base"] = f"s3://{corpus_bucket}/models/none/"
    cfg = make_cfg(spec, tmp_path, model_dir, name="s3-model-missing")
    code, msg = run(cfg, s3_server)
    assert_failed(s3_server, corpus_bucket, cfg, code, msg, Reason.MODEL_NOT_FOUND, ExitCode.BAD_INPUT)


def test_unreachable_s3(tmp_path: Path, model_dir: Path, s3_server: LocalS3) -> None:
    cfg = make_cfg(spec_dict("some-bucket", "http://127.0.0.1:9"), tmp_path, model_dir, name="unreachable")
    code, msg = run(cfg, s3_server)
    assert_failed(s3_server, "", cfg, code, msg, Reason.S3_UNAVAILABLE, ExitCode.RETRYABLE)
    assert "some-bucket" in msg.message


def test_wrong_credentials(s3_server: LocalS3, corpus_bucket: str, tmp_path: Path, model_dir: Path) -> None:
    cfg = make_cfg(spec_dict(corpus_bucket, s3_server.endpoint), tmp_path, model_dir, name="wrong-creds")
    creds = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": CANARY}
    code, msg = run(cfg, s3_server, creds)
    assert_failed(s3_server, corpus_bucket, cfg, code, msg, Reason.S3_ACCESS_DENIED, ExitCode.BAD_INPUT)
    assert corpus_bucket in msg.message
    assert s3_server.access_key not in msg.message


def test_missing_bucket(s3_server: LocalS3, tmp_path: Path, model_dir: Path) -> None:
    cfg = make_cfg(spec_dict("no-such-bucket-x", s3_server.endpoint), tmp_path, model_dir, name="no-bucket")
    code, msg = run(cfg, s3_server)
    assert_failed(s3_server, "", cfg, code, msg, Reason.S3_NOT_FOUND, ExitCode.BAD_INPUT)
    assert "no-such-bucket-x" in msg.message


def test_missing_key(s3_server: LocalS3, corpus_bucket: str, tmp_path: Path, model_dir: Path) -> None:
    spec = spec_dict(corpus_bucket, s3_server.endpoint)
    spec["data"]["train"]["uri"] = f"s3://{corpus_bucket}/corpus/absent.jsonl"
    cfg = make_cfg(spec, tmp_path, model_dir, name="no-key")
    code, msg = run(cfg, s3_server)
    assert_failed(s3_server, corpus_bucket, cfg, code, msg, Reason.S3_NOT_FOUND, ExitCode.BAD_INPUT)
    assert "corpus/absent.jsonl" in msg.message


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("corpus/empty.jsonl", "the corpus is empty"),
        ("corpus/bad.jsonl", "bad.jsonl:3: not valid JSON"),
        ("corpus/nocol.jsonl", "nocol.jsonl:1: missing column(s) answer"),
    ],
)
def test_bad_corpus(
    s3_server: LocalS3, corpus_bucket: str, tmp_path: Path, model_dir: Path, key: str, expected: str
) -> None:
    spec = spec_dict(corpus_bucket, s3_server.endpoint)
    spec["data"]["train"]["uri"] = f"s3://{corpus_bucket}/{key}"
    cfg = make_cfg(spec, tmp_path, model_dir, name="bad-corpus")
    code, msg = run(cfg, s3_server)
    assert_failed(s3_server, corpus_bucket, cfg, code, msg, Reason.INVALID_CORPUS, ExitCode.BAD_INPUT)
    assert expected in msg.message


def test_loss_format_mismatch_is_refused_before_any_work(
    s3_server: LocalS3, corpus_bucket: str, tmp_path: Path, model_dir: Path
) -> None:
    """A run config that bypassed the API's validation is refused by the run config loader (InvalidSpec)."""
    cfg = make_cfg(spec_dict(corpus_bucket, s3_server.endpoint), tmp_path, model_dir, name="mismatch")
    bad_training = cfg.spec.training.model_copy(update={"loss": Loss.COSENT})
    cfg = cfg.model_copy(update={"spec": cfg.spec.model_copy(update={"training": bad_training})})
    code, msg2 = run(cfg, s3_server)
    assert "CoSENT" in msg2.message
    assert_failed(s3_server, corpus_bucket, cfg, code, msg2, Reason.INVALID_SPEC, ExitCode.BAD_INPUT)


def test_gpu_out_of_memory(
    s3_server: LocalS3, corpus_bucket: str, tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eft_trainer.stages import train as train_stage

    def oom(*a: Any, **kw: Any) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")

    monkeypatch.setattr(train_stage, "train_model", oom)
    cfg = make_cfg(spec_dict(corpus_bucket, s3_server.endpoint), tmp_path, model_dir, name="oom")
    code, msg = run(cfg, s3_server)
    assert_failed(s3_server, corpus_bucket, cfg, code, msg, Reason.OOM, ExitCode.OUT_OF_MEMORY)
    assert "batchSize" in msg.message


def test_matryoshka_dims_larger_than_the_model(
    s3_server: LocalS3, corpus_bucket: str, tmp_path: Path, model_dir: Path
) -> None:
    """The schema cannot know the model's size: the trainer refuses [768, ...] for 384-dim MiniLM at load."""
    spec = spec_dict(corpus_bucket, s3_server.endpoint)
    spec["training"]["matryoshkaDims"] = [768, 384, 128]
    cfg = make_cfg(spec, tmp_path, model_dir, name="dims-too-big")
    code, msg = run(cfg, s3_server)
    assert_failed(s3_server, corpus_bucket, cfg, code, msg, Reason.INVALID_SPEC, ExitCode.BAD_INPUT)
    assert "spec.training.matryoshkaDims" in msg.message and "384" in msg.message


def test_promotion_gate_rejects_a_small_gain(
    s3_server: LocalS3, corpus_bucket: str, tmp_path: Path, model_dir: Path
) -> None:
    """A gain below evaluation.gate.minGain: PromotionRejected, exit 3, the report published, no model/."""
    spec = spec_dict(corpus_bucket, s3_server.endpoint)
    spec["evaluation"] = {"kValues": [1, 10], "primaryMetric": "ndcg@10", "gate": {"minGain": 0.99}}
    cfg = make_cfg(spec, tmp_path, model_dir, name="gated")
    code, msg = run(cfg, s3_server)
    assert msg is not None and msg.outcome == "Failed" and msg.reason == Reason.PROMOTION_REJECTED
    assert code == ExitCode.PROMOTION_REJECTED
    assert "minGain 0.99" in msg.message and msg.headline is not None
    prefix = cfg.run.output_prefix.split("/", 3)[3]
    published = keys(s3_server, corpus_bucket, prefix)
    assert prefix + "report.json" in published and prefix + "manifest.json" in published
    assert not any(k.startswith(prefix + "model/") for k in published)
    # Run again (eft run on the same file, a Job retried by hand): the published verdict, not a success.
    code2, again = run(cfg, s3_server)
    assert again is not None and again.reason == Reason.PROMOTION_REJECTED and code2 == ExitCode.PROMOTION_REJECTED
    assert "already published" in again.message and "minGain 0.99" in again.message
    assert again.artifacts is not None and again.artifacts.model is None
