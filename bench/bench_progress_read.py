"""What one progress read costs the operator: GET a trainer's /metrics, parse it, build status.trainerStatus.

A real trainer gauge server (``eft_trainer.metrics.Progress``) on 127.0.0.1 serves what a trainer serves in
the middle of training, evaluation figures of both models included (2 models x 20 metrics x 5 dimensions).
The operator's :class:`~eft_operator.progress_reader.ProgressReader` reads it ``--reads`` times in a row
(never writing: the progress does not change). The baseline, measured in the same run, is a bare aiohttp GET
of the same URL: the ratio says what parsing adds to the HTTP round trip. Per read, at the default interval
of 10 s, the operator spends the reported time per running resource.

    python bench/bench_progress_read.py [--reads 500]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import time
from typing import Any

import aiohttp

from eft_operator.metrics import Metrics
from eft_operator.progress_reader import ProgressReader
from eft_trainer.metrics import Progress


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def trainer() -> Progress:
    prog = Progress(_free_port(), addr="127.0.0.1")
    prog.set_phase("train")
    mid_training = {"max_steps": 3000, "step": 1234, "epoch": 1.4, "loss": 0.734, "sps": 118.2, "eta": 512.0}
    for gauge, value in mid_training.items():
        getattr(prog, gauge).set(value)
    metrics = [f"{m}@{k}" for m in ("ndcg", "mrr", "map", "recall", "accuracy") for k in (1, 3, 5, 10)]
    for model in ("base", "finetuned"):
        prog.record_eval(model, {dim: dict.fromkeys(metrics, 0.5) for dim in (768, 512, 256, 128, 64)})
    return prog


async def bare_gets(url: str, reads: int) -> float:
    async with aiohttp.ClientSession() as session:
        t0 = time.perf_counter()
        for _ in range(reads):
            async with session.get(url) as resp:
                await resp.read()
        return time.perf_counter() - t0


async def reader_reads(url: str, reads: int) -> float:
    reader = ProgressReader(10.0, Metrics(), lambda: "2026-12-01T00:00:00Z")
    written: list[Any] = []

    async def write(block: dict[str, Any]) -> None:
        written.append(block)

    log = logging.getLogger("bench")
    await reader.poll_once(("ns", "r"), url, write, log)  # the first read writes; the rest find no change
    t0 = time.perf_counter()
    for _ in range(reads):
        await reader.poll_once(("ns", "r"), url, write, log)
    seconds = time.perf_counter() - t0
    await reader.close()
    assert len(written) == 1, written
    return seconds


async def main(reads: int) -> None:
    prog = trainer()
    url = f"http://127.0.0.1:{prog.server[0].server_port}/metrics"
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            size = len(await resp.read())
        bare = await bare_gets(url, reads)
        full = await reader_reads(url, reads)
    finally:
        prog.close()
    print(f"progress read: {reads} reads of a {size}-byte /metrics on 127.0.0.1")
    print(f"  bare GET (baseline):        {bare / reads * 1000:.2f} ms per read")
    print(f"  GET + parse + trainerStatus: {full / reads * 1000:.2f} ms per read ({full / bare:.2f}x the bare GET)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reads", type=int, default=500)
    asyncio.run(main(parser.parse_args().reads))
