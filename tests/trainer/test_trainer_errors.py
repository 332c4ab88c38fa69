"""Error classes -> reasons -> exit codes, S3 error mapping, redaction (pure)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, NoCredentialsError

from eft_api import contract
from eft_api.contract import ExitCode, Reason, TrainerSettings
from eft_api.spec import Loss
from eft_trainer.errors import InvalidCorpus, S3AccessDenied, redact
from eft_trainer.stages.outcome import exit_code, failure
from eft_trainer.storage import map_error
from eft_trainer.training import pick_precision

REPO = Path(__file__).resolve().parents[2]

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


def test_a_loss_that_does_not_fit_the_format_is_refused_by_the_run_config_loader(tmp_path: Path) -> None:
    """Why the trainer has no loss guard of its own: the run config it reads is parsed with the spec's rules."""
    from trainer_helpers import make_cfg, spec_dict

    from eft_trainer.config import load_run_config

    cfg = make_cfg(spec_dict("bkt", "http://127.0.0.1:1"), tmp_path, tmp_path)
    bad = cfg.spec.training.model_copy(update={"loss": Loss.COSENT})  # bypasses validation, as a hand edit would
    path = tmp_path / "run-config.json"
    path.write_text(cfg.model_copy(update={"spec": cfg.spec.model_copy(update={"training": bad})}).to_json())
    with pytest.raises(Exception) as info:
        load_run_config(path)
    msg = failure(info.value, None)
    assert msg.reason == Reason.INVALID_SPEC and exit_code(msg) == ExitCode.BAD_INPUT
    assert "CoSENT does not fit data.train.format pairs" in msg.message


def test_credentials_from_the_mounted_secret_are_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Credentials read from EFT_S3_CREDENTIALS_DIR (not the environment) never reach a message or a log line."""
    from eft_trainer.entrypoint import _Redact

    for name in contract.S3_CREDENTIAL_VARS:
        monkeypatch.delenv(name, raising=False)
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "AWS_ACCESS_KEY_ID").write_text("AKIAFILEKEY0001\n")
    (secret / "AWS_SECRET_ACCESS_KEY").write_text(CANARY + "\n")
    monkeypatch.setenv(contract.S3_CREDENTIALS_DIR_ENV, str(secret))
    assert redact(f"key AKIAFILEKEY0001 secret {CANARY}.") == "key *** secret ***."
    assert CANARY not in S3AccessDenied(f"refused: {CANARY}").message
    crash = failure(RuntimeError(f"boom {CANARY}"), "r")
    assert CANARY not in crash.message and "***" in crash.message
    record = logging.LogRecord("eft_trainer", logging.ERROR, __file__, 1, "body %s", (CANARY,), None)
    assert _Redact().filter(record) and record.getMessage() == "body ***"


def test_the_llm_api_key_is_redacted_in_messages_and_tracebacks(monkeypatch: pytest.MonkeyPatch) -> None:
    """EFT_LLM_API_KEY is a credential like the S3 keys: out of failures, log messages and tracebacks."""
    import io

    from eft_trainer.entrypoint import _Redact

    monkeypatch.setenv(contract.LLM_API_KEY_ENV, CANARY)
    assert CANARY not in failure(RuntimeError(f"401 for Bearer {CANARY}"), "r").message
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(_Redact())
    log = logging.getLogger("eft_trainer.test_redaction")
    log.addHandler(handler)
    try:
        try:
            raise ValueError(f"the server echoed Authorization: Bearer {CANARY}")
        except ValueError:
            log.exception("calling the LLM failed with key %s", CANARY)
        log.error("stack", stack_info=True, extra={"k": CANARY})
    finally:
        log.removeHandler(handler)
    text = out.getvalue()
    assert "Traceback" in text and "ValueError" in text and "***" in text
    assert CANARY not in text


def test_the_trainer_image_agrees_with_the_contract() -> None:
    """The Dockerfile cannot import the contract's constants: it must spell the same values."""
    docker = (REPO / "trainer_image" / "Dockerfile").read_text()
    assert re.search(rf"\b{contract.RUN_CONFIG_ENV}={re.escape(contract.RUN_CONFIG_PATH)}\b", docker)
    assert re.search(rf"\bHOME={contract.WORK_DIR}\b", docker)
    assert re.search(rf"^EXPOSE {contract.TRAINER_METRICS_PORT}$", docker, flags=re.M)
    assert contract.TERMINATION_LOG_ENV == "EFT_TERMINATION_LOG"
    settings = TrainerSettings()
    assert (settings.work_dir, settings.metrics_port) == (contract.WORK_DIR, contract.TRAINER_METRICS_PORT)


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
    from eft_trainer.models import check_dimensions

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
