"""The seams: deterministic names, the run config round trip, the 4 KB termination message."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

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
    spec_digest,
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


RAW = SPEC.model_dump(mode="json", by_alias=True, exclude_none=True)


def _edited(**changes: object) -> str:
    raw = json.loads(json.dumps(RAW))
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return spec_digest(parse_spec(raw))


def test_run_id_changes_with_uid_generation_and_every_spec_change() -> None:
    digest = spec_digest(SPEC)
    assert re.fullmatch(r"g3-[0-9a-f]{5}", run_id("uid-1", 3, digest))
    edits = [_edited(training__epochs=2), _edited(data__train__uri="s3://bkt/v2.jsonl"), _edited(model__revision="v2")]
    ids = {run_id("uid-1", 3, digest), run_id("uid-2", 3, digest), run_id("uid-1", 4, digest)}
    ids |= {run_id("uid-1", 3, d) for d in edits}
    assert len(ids) == 6


def test_defaults_spelled_out_or_added_later_keep_the_run_id() -> None:
    """Every default written out (as the API server stores the resource, and as it would once an upgrade adds
    fields with defaults) is the same run as the spec the user wrote."""
    assert spec_digest(parse_spec(RAW)) == spec_digest(SPEC)
    assert _edited(training__method="full", training__epochs=1) == spec_digest(SPEC)
    assert _edited(training__epochs=2) != spec_digest(SPEC)


def test_suspending_is_not_a_new_run() -> None:
    assert _edited(runPolicy__suspend=True) == spec_digest(SPEC)


def test_run_id_is_the_same_in_another_process() -> None:
    """A restarted operator must find its children: no per-process hashing (PYTHONHASHSEED) in the id."""
    code = (
        "import json,sys; from eft_api.contract import run_id, spec_digest; from eft_api.spec import parse_spec;"
        "print(run_id('uid-1', 3, spec_digest(parse_spec(json.loads(sys.argv[1])))))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(RAW)], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == run_id("uid-1", 3, spec_digest(SPEC)), out.stderr


@pytest.mark.parametrize("name", ["q", "quickstart", "a" * 63, "x" * 253, "a-" * 40, "dotted.name." * 10])
def test_child_name_is_a_valid_label_value(name: str) -> None:
    child = child_name(name, run_id("u", 12, "d"))
    assert len(child) <= 63
    assert child[0].isalnum() and child[-1].isalnum()
    assert child == child_name(name, run_id("u", 12, "d"))
    assert child.endswith(run_id("u", 12, "d"))


def test_output_prefix_layout() -> None:
    assert output_prefix("s3://bkt/runs/", "ns", "q", "g1-abc") == "s3://bkt/runs/ns/q/g1-abc/"
    assert output_prefix("s3://bkt", "ns", "q", "g1-abc") == "s3://bkt/ns/q/g1-abc/"


def test_run_config_round_trips_and_carries_no_credentials() -> None:
    rc = build_run_config(namespace="ns", name="q", uid="u-1", generation=2, spec=SPEC)
    text = rc.to_json()
    assert RunConfig.from_json(text) == rc
    assert re.fullmatch(r"s3://bkt/runs/ns/q/g2-[0-9a-f]{5}/", rc.run.output_prefix)
    assert rc.run.output_prefix.endswith(f"/{rc.run.run_id}/")
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
