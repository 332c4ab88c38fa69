"""The progress reader against a real HTTP server: what it writes, and that every failure is counted, never raised."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import generate_latest

from eft_operator.metrics import Metrics
from eft_operator.progress_reader import MAX_BODY, ProgressReader
from eft_trainer.metrics import Progress

KEY = ("ns", "res")
LOG = logging.getLogger("test")


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Progress]]:
    """A server on 127.0.0.1: /metrics serves a real trainer registry; other paths fail in their own ways."""
    prog = Progress(0)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(prog.registry))

    def answer(response: web.Response) -> Any:
        async def handle(_: web.Request) -> web.Response:
            return response

        return handle

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/error", answer(web.Response(status=500)))
    app.router.add_get("/garbage", answer(web.Response(text="eft_trainer_step{ 1 2 3\n")))
    app.router.add_get("/huge", answer(web.Response(body=b"#" * (MAX_BODY + 10))))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", prog
    await runner.cleanup()


class Recorder:
    def __init__(self) -> None:
        self.blocks: list[dict[str, Any]] = []
        self.fail = False

    async def __call__(self, block: dict[str, Any]) -> None:
        if self.fail:
            raise RuntimeError("the API refused the patch")
        self.blocks.append(block)


def failures(metrics: Metrics, kind: str) -> float:
    return metrics.registry.get_sample_value("eft_progress_read_failures_total", {"kind": kind}) or 0.0


async def test_writes_only_changes_and_keeps_trying_after_a_failed_write(server: tuple[str, Progress]) -> None:
    base, prog = server
    metrics = Metrics()
    reader = ProgressReader(5.0, metrics, lambda: "2026-12-01T10:00:00Z")
    write = Recorder()
    prog.set_phase("evaluate-base")
    await reader.poll_once(KEY, base + "/metrics", write, LOG)
    await reader.poll_once(KEY, base + "/metrics", write, LOG)  # nothing changed: nothing written
    assert [b["progressPercentage"] for b in write.blocks] == [12]

    prog.set_phase("train")
    write.fail = True
    await reader.poll_once(KEY, base + "/metrics", write, LOG)
    assert failures(metrics, "write") == 1 and len(write.blocks) == 1
    write.fail = False
    await reader.poll_once(KEY, base + "/metrics", write, LOG)  # the change is written once the API takes it
    assert [b["phase"] for b in write.blocks] == ["EvaluatingBase", "Training"]
    assert metrics.registry.get_sample_value("eft_run_progress_percent", {"namespace": "ns", "name": "res"}) == 25
    await reader.close()


@pytest.mark.parametrize(
    ("path", "kind"),
    [("/error", "http"), ("/garbage", "parse"), ("/huge", "parse"), ("/missing", "http")],
)
async def test_a_failed_read_is_counted_and_writes_nothing(server: tuple[str, Progress], path: str, kind: str) -> None:
    base, _ = server
    metrics = Metrics()
    reader = ProgressReader(5.0, metrics, lambda: "2026-12-01T10:00:00Z")
    write = Recorder()
    await reader.poll_once(KEY, base + path, write, LOG)
    assert failures(metrics, kind) == 1 and write.blocks == []
    await reader.close()


async def test_an_unreachable_trainer_is_counted() -> None:
    metrics = Metrics()
    reader = ProgressReader(1.0, metrics, lambda: "2026-12-01T10:00:00Z")
    write = Recorder()
    await reader.poll_once(KEY, "http://127.0.0.1:9/metrics", write, LOG)  # the discard port: nothing listens
    assert failures(metrics, "unreachable") == 1 and write.blocks == []
    await reader.close()


async def test_follow_once_per_url_and_stop(server: tuple[str, Progress]) -> None:
    base, _ = server
    reader = ProgressReader(60.0, Metrics(), lambda: "t")
    write = Recorder()
    reader.follow(KEY, base + "/metrics", None, write, LOG)
    task = reader.task(KEY)
    reader.follow(KEY, base + "/metrics", None, write, LOG)
    assert task is not None and reader.task(KEY) is task  # already following: the same task
    reader.follow(KEY, base + "/error", None, write, LOG)  # the run moved to another pod: a new task
    assert reader.following(KEY) == base + "/error" and reader.task(KEY) is not task
    await asyncio.wait([task])  # the old task ends: cancelled, not left running
    assert task.cancelled()
    reader.stop(KEY)
    assert reader.following(KEY) is None
    assert ProgressReader(0, Metrics(), lambda: "t").follow(KEY, base, None, write, LOG) is None  # 0: never reads
    await reader.close()


async def test_a_phase_label_longer_than_the_status_allows_is_clipped_not_fatal(server: tuple[str, Progress]) -> None:
    """A trainer's phase label over 64 characters once raised outside the read's error handling and ended the
    resource's progress task for good; now it is clipped and written like any other."""
    base, prog = server
    reader = ProgressReader(5.0, Metrics(), lambda: "2026-12-01T10:00:00Z")
    write = Recorder()
    prog.set_phase("x" * 100)
    await reader.poll_once(KEY, base + "/metrics", write, LOG)
    assert [b["phase"] for b in write.blocks] == ["X" + "x" * 63]
    await reader.close()
