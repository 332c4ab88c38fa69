"""Errors a person can act on: each carries a :class:`~eft_api.contract.Reason` and so an exit code.

Messages name the field, file, line, bucket or key, never a credential (:func:`redact` scrubs any value of
the credential environment variables that slipped in anyway).
"""

from __future__ import annotations

import os
from pathlib import Path

from eft_api.contract import LLM_API_KEY_ENV, S3_CREDENTIAL_VARS, S3_CREDENTIALS_DIR_ENV, OomFallback, Reason


class TrainerError(Exception):
    """A failure with a known reason; ``str(exc)`` is the message for the termination message."""

    reason: Reason = Reason.CRASHED

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))
        self.message = redact(message)


class InvalidSpecError(TrainerError):
    reason = Reason.INVALID_SPEC


class InvalidCorpus(TrainerError):
    reason = Reason.INVALID_CORPUS


class ModelNotFound(TrainerError):
    reason = Reason.MODEL_NOT_FOUND


class S3Unavailable(TrainerError):
    reason = Reason.S3_UNAVAILABLE


class S3AccessDenied(TrainerError):
    reason = Reason.S3_ACCESS_DENIED


class S3NotFound(TrainerError):
    reason = Reason.S3_NOT_FOUND


class OutOfMemory(TrainerError):
    """``fallback``: what the next attempt trains with (eft_trainer.oom); None: nothing smaller to try."""

    reason = Reason.OOM

    def __init__(self, message: str, fallback: OomFallback | None = None) -> None:
        super().__init__(message)
        self.fallback = fallback


class GenerationFailed(TrainerError):
    """Too many chunks got no usable answer from the llm endpoint (it may pass: retryable)."""

    reason = Reason.GENERATION_FAILED


class GeneratorMisconfigured(TrainerError):
    """The llm endpoint refused the key or does not serve the model: fix the spec."""

    reason = Reason.GENERATOR_MISCONFIGURED


class Interrupted(TrainerError):
    """SIGTERM arrived: a checkpoint was saved and mirrored; the retry resumes from it."""

    reason = Reason.CRASHED


#: spec.output.registry.mlflow.credentialsSecret's variables (eft_trainer.registry).
MLFLOW_CREDENTIAL_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


def credential_files() -> dict[str, str]:
    """The credentials in the folder ``$EFT_S3_CREDENTIALS_DIR`` names (a mounted Secret): variable -> value."""
    folder = os.environ.get(S3_CREDENTIALS_DIR_ENV)
    out: dict[str, str] = {}
    if folder:
        for name in S3_CREDENTIAL_VARS:
            f = Path(folder) / name
            try:
                out[name] = f.read_text().strip()
            except OSError:
                continue
    return out


def secret_values() -> list[str]:
    """Every credential value this process may hold: from the environment and from the credentials folder."""
    names = (*S3_CREDENTIAL_VARS, LLM_API_KEY_ENV, *MLFLOW_CREDENTIAL_VARS)
    values = [os.environ.get(k, "") for k in names] + list(credential_files().values())
    return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with every credential value (environment or credentials folder) replaced by ``***``."""
    for value in secret_values():
        text = text.replace(value, "***")
    return text
