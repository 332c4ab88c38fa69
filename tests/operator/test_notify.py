"""The pure parts of spec.notify (eft_operator.notify): what is enqueued, the CloudEvent, bookkeeping."""

from __future__ import annotations

from typing import Any

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_binary_event

from eft_api.spec import parse_spec
from eft_operator import notify

BODY = {"metadata": {"namespace": "ml", "name": "search", "uid": "u1"}}


def spec(*targets: dict[str, Any]) -> Any:
    return parse_spec(
        {
            "model": {"base": "a/b"},
            "data": {"train": {"uri": "s3://bucket/t/", "format": "pairs"}},
            "output": {"uri": "s3://bucket/o/"},
            "notify": list(targets),
        }
    )


def ended(phase: str, reason: str) -> dict[str, Any]:
    run = {"id": "g1-abc", "generation": 1, "phase": phase, "reason": reason, "completionTime": "2026-12-05T10:00:00Z"}
    entry = {**run, "primaryMetric": "ndcg@10", "base": 0.5, "finetuned": 0.6, "gain": 0.1, "registeredVersion": "3"}
    return {
        "currentRun": run,
        "runs": [entry],
        "results": {"runId": "g1-abc", "reindexRequired": False},
        "artifacts": {"model": "s3://b/m/"},
    }


@pytest.mark.parametrize(
    ("phase", "reason", "event"),
    [
        ("Succeeded", "Succeeded", "RunSucceeded"),
        ("Failed", "PromotionRejected", "PromotionRejected"),
        ("Failed", "OOMKilled", "RunFailed"),
        ("Superseded", "Superseded", None),
        ("Running", "Running", None),
    ],
)
def test_the_outcome_picks_the_event(phase: str, reason: str, event: str | None) -> None:
    status = ended(phase, reason)
    notify.enqueue({"currentRun": {"id": "g1-abc", "phase": "Running"}}, status, spec({"url": "http://h/"}), BODY)
    pending = status.get("pendingNotifications") or []
    assert [p["type"] for p in pending] == ([f"dev.eft.finetune.{event}"] if event else [])


def test_enqueued_once_with_the_receivers_that_want_it() -> None:
    s = spec({"url": "http://a/"}, {"url": "http://b/", "events": ["RunFailed"]}, {"url": "http://c/"})
    status = ended("Succeeded", "Succeeded")
    notify.enqueue({}, status, s, BODY)
    (record,) = status["pendingNotifications"]
    assert record["id"] == "g1-abc.RunSucceeded" and record["urls"] == ["http://a/", "http://c/"]
    data = record["data"]
    assert data["registeredVersion"] == "3" and data["reindexRequired"] is False and data["results"]["gain"] == 0.1
    assert data["artifacts"] == {"model": "s3://b/m/"}
    again = {**status, "pendingNotifications": []}
    notify.enqueue(status, again, s, BODY)  # a later pass: the outcome was recorded already
    assert again["pendingNotifications"] == []


def test_the_cloudevent_is_binary_mode_and_parses_back() -> None:
    status = ended("Succeeded", "Succeeded")
    notify.enqueue({}, status, spec({"url": "http://a/"}), BODY)
    headers, body = notify.cloud_event(status["pendingNotifications"][0])
    assert headers["ce-specversion"] == "1.0" and headers["ce-id"] == "g1-abc.RunSucceeded"
    event = from_binary_event(HTTPMessage(headers=headers, body=body))
    assert event.get_source() == "/apis/finetune.eft.dev/v1alpha1/namespaces/ml/embeddingfinetunes/search"
    assert event.get_data()["runId"] == "g1-abc"


def test_without_drops_a_url_then_the_record() -> None:
    pending = [{"id": "a", "urls": ["u1", "u2"]}, {"id": "b", "urls": ["u1"]}]
    assert notify.without(pending, "a", "u1") == [{"id": "a", "urls": ["u2"]}, {"id": "b", "urls": ["u1"]}]
    assert notify.without(pending, "b", "u1") == [{"id": "a", "urls": ["u1", "u2"]}]


def test_urls_in_messages_lose_credentials_and_query() -> None:
    assert (
        notify.shown("https://user:tok3n@hooks.example.com:8443/eft?key=s3cret") == "https://hooks.example.com:8443/eft"
    )
