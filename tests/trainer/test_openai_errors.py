"""The one table that tells failed calls to an OpenAI-compatible endpoint apart (eft_trainer.openai_errors), over
every exception type the ``openai`` client raises, built as the client builds them (pure: no server)."""

from __future__ import annotations

import asyncio
import json
import random

import httpx2  # the HTTP library the openai client is built on (its exceptions carry its requests and responses)
import openai
import pytest

from eft_trainer.openai_errors import MAX_BACKOFF, CallFailure, backoff, classify, error_summary, retry_after

REQUEST = httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions")


def answered(cls: type[openai.APIStatusError], status: int, headers: dict[str, str] | None = None) -> BaseException:
    response = httpx2.Response(status, headers=headers, request=REQUEST)
    return cls(f"HTTP {status}", response=response, body=None)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (answered(openai.RateLimitError, 429, {"Retry-After": "2"}), CallFailure("rateLimited", "error429", 429, 2.0)),
        (answered(openai.RateLimitError, 429), CallFailure("rateLimited", "error429", 429, None)),
        (answered(openai.BadRequestError, 400), CallFailure("badRequest", "error400", 400)),
        (answered(openai.AuthenticationError, 401), CallFailure("refused", "error401", 401)),
        (answered(openai.PermissionDeniedError, 403), CallFailure("refused", "error403", 403)),
        (answered(openai.NotFoundError, 404), CallFailure("refused", "error404", 404)),
        (answered(openai.ConflictError, 409), CallFailure("status", "error409", 409)),
        (answered(openai.UnprocessableEntityError, 422), CallFailure("status", "error422", 422)),
        (answered(openai.InternalServerError, 500), CallFailure("status", "error500", 500)),
        (answered(openai.InternalServerError, 503), CallFailure("status", "error503", 503)),
        (answered(openai.APIStatusError, 418), CallFailure("status", "error418", 418)),
        (openai.APITimeoutError(REQUEST), CallFailure("timeout", "errorTimeout")),
        (openai.APIConnectionError(request=REQUEST), CallFailure("connection", "errorConnection")),
        (
            openai.APIResponseValidationError(httpx2.Response(200, request=REQUEST), body=None),
            CallFailure("malformed", "errorMalformedResponse"),
        ),
        (openai.APIError("no body", REQUEST, body=None), CallFailure("malformed", "errorMalformedResponse")),
        (json.JSONDecodeError("Expecting value", "{not json", 1), CallFailure("malformed", "errorMalformedResponse")),
        (ValueError("bad shape"), CallFailure("malformed", "errorMalformedResponse")),
        (KeyError("choices"), None),  # a bug, not a failed call: the caller re-raises it
        (asyncio.CancelledError(), None),
        (openai.OpenAIError("no API key"), None),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else "",
)
def test_classify(exc: BaseException, expected: CallFailure | None) -> None:
    assert classify(exc) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "1"}, 1.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"Retry-After": "-3"}, 0.0),
        ({"Retry-After": "3600"}, MAX_BACKOFF),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({}, None),
    ],
)
def test_retry_after_is_read_and_bounded(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after(answered(openai.RateLimitError, 429, headers)) == expected


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    rng = random.Random(0)
    for attempt, base in [(0, 0.5), (1, 1.0), (3, 4.0), (10, MAX_BACKOFF)]:
        assert 0.5 * base <= backoff(attempt, rng) <= 1.5 * base


def test_error_summary_names_only_the_error_counters() -> None:
    assert (
        error_summary({"requests": 5, "errorTimeout": 1, "error429": 2, "retries": 3}) == "error429 2, errorTimeout 1"
    )
    assert error_summary({"requests": 1}) == "no errors recorded"
