"""Error classes -> reasons -> exit codes, S3 error mapping, redaction (pure)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, NoCredentialsError

from eft_api.contract import ExitCode, Reason
from eft_api.spec import DataFormat, Loss
from eft_trainer.entrypoint import exit_code, failure
from eft_trainer.errors import InvalidCorpus, redact
from eft_trainer.storage import map_error
from eft_trainer.training import check_loss_fits, pick_precision

CANARY = "canary-SECRET-7f3a9b"


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": f"echo {CANARY}"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetObject",
    )


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (client_error("AccessDenied", 403), Reason.S3_ACCESS_DENIED),
        (client_error("InvalidAccessKeyId", 403), Reason.S3_ACCESS_DENIED),
        (client_error("SignatureDoesNotMatch", 403), Reason.S3_ACCESS_DENIED),
        (client_error("ExpiredToken", 400), Reason.S3_ACCESS_DENIED),
        (client_error("NoSuchBucket", 404), Reason.S3_NOT_FOUND),
        (client_error("NoSuchKey", 404), Reason.S3_NOT_FOUND),
        (client_error("404", 404), Reason.S3_NOT_FOUND),
        (client_error("SlowDown", 503), Reason.S3_UNAVAILABLE),
        (client_error("InternalError", 500), Reason.S3_UNAVAILABLE),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), Reason.S3_UNAVAILABLE),
        (ConnectTimeoutError(endpoint_url="http://x"), Reason.S3_UNAVAILABLE),
        (NoCredentialsError(), Reason.S3_ACCESS_DENIED),
    ],
)
def test_s3_errors_map_to_reasons_without_server_text(exc: Exception, reason: Reason) -> None:
    err = map_error(exc, "GET", "bucket-a", "data/x.jsonl")
    assert err.reason is reason
    assert "s3://bucket-a/data/x.jsonl" in err.message
    assert CANARY not in err.message


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        (Reason.INVALID_CORPUS, ExitCode.BAD_INPUT),
        (Reason.S3_UNAVAILABLE, ExitCode.RETRYABLE),
        (Reason.OOM, ExitCode.OUT_OF_MEMORY),
        (Reason.CRASHED, ExitCode.CRASHED),
    ],
)
def test_exit_code_of_failure(reason: Reason, code: ExitCode) -> None:
    from eft_trainer import errors

    cls = {
        Reason.INVALID_CORPUS: errors.InvalidCorpus,
        Reason.S3_UNAVAILABLE: errors.S3Unavailable,
        Reason.OOM: errors.OutOfMemory,
        Reason.CRASHED: errors.TrainerError,
    }[reason]
    assert exit_code(failure(cls("x"), "r")) == code


def test_oom_and_crash_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CANARY)
    oom = failure(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), "r")
    assert oom.reason == Reason.OOM and exit_code(oom) == ExitCode.OUT_OF_MEMORY
    assert "batchSize" in oom.message
    crash = failure(RuntimeError(f"boom with {CANARY}"), "r")
    assert crash.reason == Reason.CRASHED and CANARY not in crash.message and "***" in crash.message
    assert CANARY not in InvalidCorpus(f"x {CANARY}").message
    assert redact(f"a{CANARY}b") == "a***b"


def test_loss_guard() -> None:
    check_loss_fits(DataFormat.PAIRS, Loss.MULTIPLE_NEGATIVES_RANKING)
    with pytest.raises(Exception) as info:
        check_loss_fits(DataFormat.PAIRS, Loss.COSENT)
    assert getattr(info.value, "reason", None) is Reason.LOSS_FORMAT_MISMATCH
    assert "spec.training.loss" in str(info.value)


@pytest.mark.parametrize(
    ("precision", "cuda", "bf16", "expected"),
    [
        ("auto", False, False, "fp32"),
        ("bf16", False, False, "fp32"),
        ("auto", True, True, "bf16"),
        ("auto", True, False, "fp16"),
        ("bf16", True, False, "fp16"),
        ("fp32", True, True, "fp32"),
    ],
)
def test_precision(precision: str, cuda: bool, bf16: bool, expected: str) -> None:
    assert pick_precision(precision, cuda, bf16) == expected


@pytest.mark.parametrize(
    ("dims", "gate_dim", "problem"),
    [
        ([384, 256, 64], None, None),
        ([], None, None),
        ([384], 384, None),
        ([768, 384], None, "spec.training.matryoshkaDims: [768]"),
        ([1024, 512, 384], None, "spec.training.matryoshkaDims: [1024, 512]"),
        ([], 512, "spec.evaluation.gate.dimension: 512"),
    ],
)
def test_dimensions_must_fit_the_model(dims: list[int], gate_dim: int | None, problem: str | None) -> None:
    from eft_api.spec import parse_spec
    from eft_trainer.errors import InvalidSpecError
    from eft_trainer.training import check_dimensions

    raw: dict[str, Any] = {
        "model": {"base": "org/m"},
        "data": {"train": {"uri": "s3://bkt/t.jsonl", "format": "pairs"}},
        "output": {"uri": "s3://bkt/o/"},
        "training": {"matryoshkaDims": dims},
    }
    if gate_dim is not None:
        raw["evaluation"] = {"gate": {"minGain": 0.0, "dimension": gate_dim}}
    spec = parse_spec(raw)
    if problem is None:
        check_dimensions(spec, 384, "org/m")
    else:
        with pytest.raises(InvalidSpecError) as info:
            check_dimensions(spec, 384, "org/m")
        assert str(info.value).startswith(problem)
