"""The seams: deterministic names, the run config round trip, the 4 KB termination message."""

from __future__ import annotations

import json

import pytest

from eft_api.contract import (
    EXIT_CODE_OF_REASON,
    NON_RETRYABLE_EXIT_CODES,
    TERMINATION_MESSAGE_LIMIT,
    Artifacts,
    ExitCode,
    Headline,
    Reason,
    RunConfig,
    TerminationMessage,
    build_run_config,
    child_name,
    output_prefix,
    run_id,
)
from eft_api.spec import parse_spec

SPEC = parse_spec(
    {
        "model": {"base": "org/model"},
        "data": {"train": {"uri": "s3://bkt/train.jsonl", "format": "pairs"}},
        "output": {"uri": "s3://bkt/runs"},
        "storage": {"credentialsSecret": {"name": "creds"}},
    }
)


def test_run_id_is_deterministic_and_differs_by_uid_and_generation() -> None:
    assert run_id("uid-1", 3) == run_id("uid-1", 3)
    assert run_id("uid-1", 3).startswith("g3-")
    assert len({run_id("uid-1", 3), run_id("uid-2", 3), run_id("uid-1", 4)}) == 3


@pytest.mark.parametrize("name", ["q", "quickstart", "a" * 63, "x" * 253, "a-" * 40, "dotted.name." * 10])
def test_child_name_is_a_valid_label_value(name: str) -> None:
    child = child_name(name, run_id("u", 12))
    assert len(child) <= 63
    assert child[0].isalnum() and child[-1].isalnum()
    assert child == child_name(name, run_id("u", 12))
    assert child.endswith(run_id("u", 12))


def test_output_prefix_layout() -> None:
    assert output_prefix("s3://bkt/runs/", "ns", "q", "g1-abc") == "s3://bkt/runs/ns/q/g1-abc/"
    assert output_prefix("s3://bkt", "ns", "q", "g1-abc") == "s3://bkt/ns/q/g1-abc/"


def test_run_config_round_trips_and_carries_no_credentials() -> None:
    rc = build_run_config(namespace="ns", name="q", uid="u-1", generation=2, spec=SPEC)
    text = rc.to_json()
    assert RunConfig.from_json(text) == rc
    assert rc.run.output_prefix == f"s3://bkt/runs/ns/q/{run_id('u-1', 2)}/"
    data = json.loads(text)
    assert data["spec"]["storage"]["credentialsSecret"] == {"name": "creds"}
    assert "AWS_SECRET_ACCESS_KEY" not in text


def test_termination_message_fits_4kb_and_parses_back() -> None:
    msg = TerminationMessage(
        outcome="Failed",
        reason=Reason.INVALID_CORPUS,
        message="bad JSON at s3://bkt/train.jsonl line 7: " + "x" * 10_000,
        run_id="g1-abcde",
        headline=Headline(primary_metric="ndcg@10", dimension=384, base=0.5, finetuned=0.6, gain=0.1),
        artifacts=Artifacts(report="s3://bkt/runs/ns/q/g1-abcde/report.json"),
    )
    text = msg.to_json()
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    back = TerminationMessage.parse(text)
    assert back is not None
    assert back.reason == "InvalidCorpus"
    assert back.message.startswith("bad JSON at s3://bkt/train.jsonl line 7")
    assert back.headline == msg.headline


@pytest.mark.parametrize("text", [None, "", "Killed", "{not json", '{"outcome": "Maybe"}'])
def test_foreign_termination_messages_are_ignored(text: str | None) -> None:
    assert TerminationMessage.parse(text) is None


def test_every_reason_has_an_exit_class() -> None:
    assert set(EXIT_CODE_OF_REASON) == set(Reason)
    assert EXIT_CODE_OF_REASON[Reason.INVALID_CORPUS] in NON_RETRYABLE_EXIT_CODES
    assert EXIT_CODE_OF_REASON[Reason.S3_UNAVAILABLE] not in NON_RETRYABLE_EXIT_CODES
    assert ExitCode.SUCCEEDED not in NON_RETRYABLE_EXIT_CODES
