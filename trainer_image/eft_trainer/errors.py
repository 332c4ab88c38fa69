"""Errors a person can act on: each carries a :class:`~eft_api.contract.Reason` and so an exit code.

Messages name the field, file, line, bucket or key, never a credential (:func:`redact` scrubs any value of
the credential environment variables that slipped in anyway).
"""

from __future__ import annotations

import os

from eft_api.contract import EXIT_CODE_OF_REASON, ExitCode, Reason

_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")


class TrainerError(Exception):
    """A failure with a known reason; ``str(exc)`` is the message for the termination message."""

    reason: Reason = Reason.CRASHED

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))
        self.message = redact(message)

    @property
    def exit_code(self) -> ExitCode:
        return EXIT_CODE_OF_REASON[self.reason]


class InvalidSpecError(TrainerError):
    reason = Reason.INVALID_SPEC


class InvalidCorpus(TrainerError):
    reason = Reason.INVALID_CORPUS


class LossFormatMismatch(TrainerError):
    reason = Reason.LOSS_FORMAT_MISMATCH


class ModelNotFound(TrainerError):
    reason = Reason.MODEL_NOT_FOUND


class S3Unavailable(TrainerError):
    reason = Reason.S3_UNAVAILABLE


class S3AccessDenied(TrainerError):
    reason = Reason.S3_ACCESS_DENIED


class S3NotFound(TrainerError):
    reason = Reason.S3_NOT_FOUND


class OutOfMemory(TrainerError):
    reason = Reason.OOM


class GenerationFailed(TrainerError):
    """Too many chunks got no usable answer from the llm endpoint (it may pass: retryable)."""

    reason = Reason.GENERATION_FAILED


class GeneratorMisconfigured(TrainerError):
    """The llm endpoint refused the key or does not serve the model: fix the spec."""

    reason = Reason.GENERATOR_MISCONFIGURED


class Interrupted(TrainerError):
    """SIGTERM arrived: a checkpoint was saved and mirrored; the retry resumes from it."""

    reason = Reason.CRASHED


def secret_values() -> list[str]:
    return [v for k in _SECRET_ENV if len(v := os.environ.get(k, "")) >= 4]


def redact(text: str) -> str:
    """``text`` with every credential value of the environment replaced by ``***``."""
    for value in secret_values():
        text = text.replace(value, "***")
    return text
