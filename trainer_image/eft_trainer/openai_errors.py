"""How a failed call to an OpenAI-compatible endpoint is told apart and counted: one table for every client of
one (the llm generator, the embeddings baselines), so that they count the same failure under the same key.

:func:`classify` says what an exception from the ``openai`` client (or an answer it could not read) was: its
kind, the counter it goes under (``error429``, ``errorTimeout``, ``errorMalformedResponse``, ...), its HTTP
status and the wait the server asked for. Each caller decides what to do about it: which kinds stop at once
(a refused key, an unknown model), which it retries, what a 400 means to it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

MAX_BACKOFF = 30.0

Kind = Literal["rateLimited", "badRequest", "refused", "timeout", "connection", "status", "malformed"]


@dataclass(frozen=True)
class CallFailure:
    """One failed call: what ``kind`` of failure, the counter ``key`` it is counted under, the HTTP ``status``
    where there was an answer, and the ``retry_after`` seconds the server asked for (capped)."""

    kind: Kind
    key: str
    status: int | None = None
    retry_after: float | None = None


def classify(exc: BaseException) -> CallFailure | None:
    """What a failed call was; None for anything that is not a failed call (a bug: the caller re-raises it).

    401, 403 and 404 are ``refused`` (the key or the model); any other status the client raises is ``status``
    (``error<code>``); a body that is not JSON or not the expected shape (a ``ValueError``, or an ``APIError``
    with no status) is ``malformed``. A timeout is told apart from other connection failures."""
    import openai  # about half a second to import: only a run that calls an endpoint pays it

    if isinstance(exc, openai.RateLimitError):
        return CallFailure("rateLimited", "error429", exc.status_code, retry_after(exc))
    if isinstance(exc, openai.BadRequestError):
        return CallFailure("badRequest", "error400", exc.status_code)
    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)):
        return CallFailure("refused", f"error{exc.status_code}", exc.status_code)
    if isinstance(exc, openai.APIStatusError):
        return CallFailure("status", f"error{exc.status_code}", exc.status_code)
    if isinstance(exc, openai.APITimeoutError):
        return CallFailure("timeout", "errorTimeout")
    if isinstance(exc, openai.APIConnectionError):
        return CallFailure("connection", "errorConnection")
    if isinstance(exc, (openai.APIError, ValueError)):  # a body that is not JSON (json.JSONDecodeError), and the like
        return CallFailure("malformed", "errorMalformedResponse")
    return None


def retry_after(exc: Any) -> float | None:
    """The Retry-After seconds of an error's answer, within [0, MAX_BACKOFF]; None when absent or unreadable."""
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return min(MAX_BACKOFF, max(0.0, float(value))) if value is not None else None
    except ValueError:
        return None


def backoff(attempt: int, rng: random.Random) -> float:
    """Exponential backoff with jitter before try ``attempt + 1``: 0.5 s doubling, capped, times 0.5 to 1.5."""
    return min(MAX_BACKOFF, 0.5 * 2.0**attempt) * (0.5 + rng.random())


def error_summary(counts: Mapping[str, int]) -> str:
    """The error counters for a failure message: ``error429 2, errorTimeout 1`` (sorted)."""
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k.startswith("error")) or "no errors recorded"
