"""The operator's side of ``spec.retrain`` (issue 22): the world read into :class:`eft_api.retrain.World`, the
decision folded into the run and ``status.retrain``, and the timers that wake a resource at its next schedule
time (or data check).

The decisions themselves are pure (:mod:`eft_api.retrain`); this module only reads the resource's metadata
and status and keeps asyncio timers. It never reads a Secret.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from eft_api.retrain import RETRAIN_ANNOTATION, Decision, RunTrigger, World, decide, parse_time, rfc3339
from eft_api.spec import EmbeddingFinetuneSpec
from eft_operator.status import Event

#: Longest single sleep of a timer: a far schedule time is approached in steps (clock changes, suspend).
MAX_SLEEP = 60.0


def in_play(body: Mapping[str, Any], spec: EmbeddingFinetuneSpec) -> bool:
    """Whether retraining concerns this resource at all (a spec.retrain block or the annotation)."""
    return spec.retrain is not None or _annotation(body) is not None


def _annotation(body: Mapping[str, Any]) -> str | None:
    value = ((body.get("metadata") or {}).get("annotations") or {}).get(RETRAIN_ANNOTATION)
    return str(value) if value is not None else None


def plan(
    body: Mapping[str, Any], spec: EmbeddingFinetuneSpec, prev: Mapping[str, Any], now: str, active: bool
) -> Decision | None:
    """What the triggers want in a pass that keeps the current run (None: retraining is not in play)."""
    if not in_play(body, spec):
        return None
    st = dict(prev.get("retrain") or {})
    current = prev.get("currentRun") or {}
    clock = parse_time(now) or dt.datetime.now(dt.UTC)
    created = parse_time((body.get("metadata") or {}).get("creationTimestamp")) or clock
    started = parse_time(current.get("startTime"))
    if "lastScheduleTime" not in st and started is not None and started > created:
        st["lastScheduleTime"] = rfc3339(started)  # a schedule added later does not catch up on the past
    world = World(
        spec=spec.retrain,
        now=clock,
        created=created,
        status=st,
        manual=_annotation(body),
        active=active,
        run_digest=current.get("dataDigest") or st.get("baselineDigest"),
    )
    return decide(world)


def spec_change_trigger(spec: EmbeddingFinetuneSpec, prev: Mapping[str, Any]) -> RunTrigger | None:
    """The trigger of a run started by a spec change: it carries the data digest the probe last reported."""
    if spec.retrain is None or not spec.retrain.on_data_change.enabled:
        return None
    digest = (prev.get("retrain") or {}).get("lastDataDigest")
    return RunTrigger("specChange", "", str(digest)) if digest else None


def run_fields(trigger: RunTrigger | None, body: Mapping[str, Any], spec: EmbeddingFinetuneSpec) -> dict[str, Any]:
    """What a new run's status entry records about why it ran (nothing when retraining is not in play)."""
    if trigger is None:
        return {"trigger": "specChange"} if in_play(body, spec) else {}
    return trigger.record()


def fold_status(
    status: dict[str, Any],
    decision: Decision | None,
    started: RunTrigger | None,
    body: Mapping[str, Any],
    spec: EmbeddingFinetuneSpec,
    now: str,
) -> list[Event]:
    """Write ``status.retrain`` from the pass's decision (or a spec-change start) into ``status``; its Events."""
    if not in_play(body, spec):
        return []
    block = dict(decision.status if decision is not None else status.get("retrain") or {})
    if decision is None and started is not None:  # a new run for a spec change: it consumes the annotation
        block.update(lastTrigger="specChange", lastTriggerTime=now)
        manual = _annotation(body)
        if manual is not None:
            block["lastManual"] = manual
    if block:
        status["retrain"] = block
    return [Event(*e) for e in (decision.events if decision is not None else [])]


def superseded_by(trigger: RunTrigger | None, generation: int) -> str:
    if trigger is None or trigger.kind == "specChange":
        return f"generation {generation} changed the spec"
    return f"a {trigger.kind} trigger started a new run (concurrencyPolicy Replace)"


class Timers:
    """One timer per resource, waking it at its next schedule time; re-armed after every pass.

    A timer sleeps in steps of at most ``max_sleep`` seconds and compares ``clock()`` with its time after
    each, so a clock that jumps (a suspended laptop, a test's clock) wakes it on time."""

    def __init__(self, clock: Callable[[], dt.datetime], max_sleep: float = MAX_SLEEP) -> None:
        self.clock = clock
        self.max_sleep = max_sleep
        self._tasks: dict[tuple[str, str], tuple[dt.datetime, asyncio.Task[None]]] = {}

    def arm(self, key: tuple[str, str], when: dt.datetime | None, wake: Callable[[], Awaitable[None]]) -> None:
        """Wake ``key`` at ``when`` (None: no timer). An existing timer for the same time stays."""
        old = self._tasks.get(key)
        if old is not None and when is not None and old[0] == when and not old[1].done():
            return
        self.cancel(key)
        if when is None:
            return
        task = asyncio.create_task(self._sleep_then(key, when, wake), name=f"retrain timer {key}")
        self._tasks[key] = (when, task)

    async def _sleep_then(self, key: tuple[str, str], when: dt.datetime, wake: Callable[[], Awaitable[None]]) -> None:
        while (left := (when - self.clock()).total_seconds()) >= 0:
            await asyncio.sleep(min(left + 0.2, self.max_sleep))  # past the time, not a hair before it
        entry = self._tasks.get(key)
        if entry is not None and entry[1] is asyncio.current_task():
            del self._tasks[key]
        await wake()

    def armed(self, key: tuple[str, str]) -> dt.datetime | None:
        entry = self._tasks.get(key)
        return entry[0] if entry is not None else None

    def cancel(self, key: tuple[str, str]) -> None:
        entry = self._tasks.pop(key, None)
        if entry is not None and entry[1] is not asyncio.current_task():
            entry[1].cancel()

    def close(self) -> None:
        for key in list(self._tasks):
            self.cancel(key)


def wake_at(decision: Decision | None) -> dt.datetime | None:
    return decision.wake_at if decision is not None else None


def clock_of(now: str) -> dt.datetime:
    return parse_time(now) or dt.datetime.now(dt.UTC)
