"""The pure retraining decisions (eft_api.retrain): cron, durations, CronJob-like catch-up, triggers, run ids."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from eft_api import contract
from eft_api.retrain import (
    RetrainSpec,
    RunTrigger,
    World,
    check_cron,
    check_time_zone,
    decide,
    next_schedule_time,
    parse_duration,
    schedule_check,
)
from eft_api.spec import InvalidSpec, parse_spec

UTC = dt.UTC


def t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1m", 60), ("15m", 900), ("1h", 3600), ("1h30m", 5400), ("90s", 90), ("720h", 720 * 3600)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "1", "1d", "h", "1.5h", "-1m", "1 h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize("expr", ["0 2 * * *", "*/5 * * * *", "@daily", "0 8-18/2 1,15 JAN-jun mon-fri"])
def test_good_cron(expr: str) -> None:
    assert check_cron(expr) == expr


@pytest.mark.parametrize("expr", ["", "* * * *", "60 * * * *", "0 0 32 * *", "0 0 * 13 *", "@never", "a b c d e"])
def test_bad_cron(expr: str) -> None:
    with pytest.raises(ValueError, match="cron"):
        check_cron(expr)


def test_time_zone_unknown_to_the_database_is_refused_by_the_model_and_named() -> None:
    # The CRD can only check the shape; the typed model (and so eft validate) checks the tz database.
    assert check_time_zone("Europe/Berlin") == "Europe/Berlin"
    spec = {
        "model": {"base": "a/b"},
        "data": {"train": {"uri": "s3://bucket/t/", "format": "pairs"}},
        "output": {"uri": "s3://bucket/o/"},
        "retrain": {"schedule": "@daily", "timeZone": "Mars/Olympus_Mons"},
    }
    with pytest.raises(InvalidSpec) as err:
        parse_spec(spec)
    assert [p.path for p in err.value.problems] == ["spec.retrain.timeZone"]
    assert "tz database" in err.value.problems[0].message


def test_next_schedule_time_follows_the_time_zone() -> None:
    # 02:00 in Berlin is 01:00 UTC in winter.
    assert next_schedule_time("0 2 * * *", "Europe/Berlin", t("2026-12-05T00:00:00")) == t("2026-12-05T01:00:00")
    assert next_schedule_time("0 2 * * *", None, t("2026-12-05T02:00:00")) == t("2026-12-06T02:00:00")


@pytest.mark.parametrize(
    ("last", "now", "deadline", "due", "missed", "too_late"),
    [
        # nothing due yet
        ("2026-12-05T10:00:30", "2026-12-05T10:00:50", None, None, 0, None),
        # one due
        ("2026-12-05T10:00:30", "2026-12-05T10:01:05", None, "2026-12-05T10:01:00", 1, None),
        # down across three times: one catch-up, the newest
        ("2026-12-05T10:00:30", "2026-12-05T10:03:30", None, "2026-12-05T10:03:00", 3, None),
        # the newest within the deadline
        ("2026-12-05T10:00:30", "2026-12-05T10:03:20", 30, "2026-12-05T10:03:00", 3, None),
        # the newest older than the deadline: skipped, not caught up
        ("2026-12-05T10:00:30", "2026-12-05T10:03:45", 30, None, 3, "2026-12-05T10:03:00"),
        ("2026-12-05T10:00:30", "2026-12-05T10:03:45", 50, "2026-12-05T10:03:00", 3, None),
        # more than 100 missed: the schedule around now
        ("2026-12-01T00:00:00", "2026-12-05T10:03:30", None, "2026-12-05T10:03:00", 100, None),
    ],
)
def test_schedule_check_catches_up_once_like_cronjob(
    last: str, now: str, deadline: int | None, due: str | None, missed: int, too_late: str | None
) -> None:
    check = schedule_check("* * * * *", None, last=t(last), now=t(now), deadline=deadline)
    assert check.due == (t(due) if due else None)
    assert check.missed == missed
    assert check.too_late == (t(too_late) if too_late else None)
    assert check.next > t(now)


def world(**kw: Any) -> World:
    base: dict[str, Any] = {
        "spec": RetrainSpec(schedule="* * * * *"),
        "now": t("2026-12-05T10:01:05"),
        "created": t("2026-12-05T10:00:10"),
        "status": {},
    }
    base.update(kw)
    return World(**base)


def test_schedule_starts_one_run_per_schedule_time() -> None:
    first = decide(world())
    assert first.start == RunTrigger("schedule", "2026-12-05T10:01:00Z", None)
    assert first.status["lastScheduleTime"] == "2026-12-05T10:01:00Z"
    assert first.status["nextScheduleTime"] == "2026-12-05T10:02:00Z"
    assert first.wake_at == t("2026-12-05T10:02:00")
    again = decide(world(status=first.status, now=t("2026-12-05T10:01:40")))
    assert again.start is None


def test_forbid_skips_and_counts_a_time_while_a_run_is_going() -> None:
    d = decide(world(active=True, status={"skipped": 2}))
    assert d.start is None and d.status["skipped"] == 3
    assert d.status["lastScheduleTime"] == "2026-12-05T10:01:00Z"  # not caught up when the run ends
    assert d.events[0][1] == "RetrainSkipped"


def test_replace_supersedes_the_going_run() -> None:
    d = decide(world(active=True, spec=RetrainSpec(schedule="* * * * *", concurrencyPolicy="Replace")))
    assert d.start is not None and d.start.kind == "schedule" and d.replace


def test_manual_trigger_starts_once_per_value_and_waits_under_forbid() -> None:
    d = decide(world(spec=None, manual="2026-12-05T10:00:59Z"))
    assert d.start == RunTrigger("manual", "2026-12-05T10:00:59Z", None)
    assert d.status["lastManual"] == "2026-12-05T10:00:59Z" and d.status["lastTrigger"] == "manual"
    assert decide(world(spec=None, manual="2026-12-05T10:00:59Z", status=d.status)).start is None
    waiting = decide(world(spec=None, manual="x", active=True))
    assert waiting.start is None and "lastManual" not in waiting.status  # starts once the run ends


def test_data_change_starts_a_run_and_unchanged_data_skips_the_schedule() -> None:
    on = RetrainSpec(onDataChange={"enabled": True})
    assert decide(world(spec=on, status={"lastDataDigest": "b"}, run_digest="a")).start == RunTrigger(
        "dataChange", "b", "b"
    )
    assert decide(world(spec=on, status={"lastDataDigest": "a"}, run_digest="a")).start is None
    both = RetrainSpec(schedule="* * * * *", onDataChange={"enabled": True})
    d = decide(world(spec=both, status={"lastDataDigest": "a"}, run_digest="a"))
    assert d.start is None and d.status["skipped"] == 1


def test_no_retrain_fields_keep_the_run_id() -> None:
    rid = contract.run_id("uid", 3, "digest")
    assert contract.run_id("uid", 3, "digest", RunTrigger().salt()) == rid
    on_a = contract.run_id("uid", 3, "digest", RunTrigger("dataChange", "a", "a").salt())
    on_b = contract.run_id("uid", 3, "digest", RunTrigger("dataChange", "b", "b").salt())
    sched = contract.run_id("uid", 3, "digest", RunTrigger("schedule", "2026-12-05T10:01:00Z").salt())
    assert len({rid, on_a, on_b, sched}) == 4


def test_retrain_and_notify_edits_are_not_a_new_run() -> None:
    spec = {
        "model": {"base": "a/b"},
        "data": {"train": {"uri": "s3://bucket/t/", "format": "pairs"}},
        "output": {"uri": "s3://bucket/o/"},
    }
    plain = contract.spec_digest(parse_spec(spec))
    edited = parse_spec({**spec, "retrain": {"schedule": "@daily"}, "notify": [{"url": "http://h/"}]})
    assert contract.spec_digest(edited) == plain
