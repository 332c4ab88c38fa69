"""Reads running trainers' gauges and hands each change to a writer: the I/O edge of :mod:`eft_operator.progress`.

One asyncio task per resource whose run is running, started and stopped by the reconciler's passes
(:meth:`ProgressReader.follow`, :meth:`ProgressReader.stop`). Every ``interval`` seconds it GETs the
trainer pod's ``/metrics`` (plain HTTP to the pod IP, from the operator: the trainer holds no token and
needs no RBAC), turns the gauges into ``status.trainerStatus`` and calls the writer only when something
other than the time changed. A failed read or write never fails anything: it is counted in
``eft_progress_read_failures_total{kind}``, logged at debug, and the status keeps its last value.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp

from eft_operator.metrics import Metrics
from eft_operator.progress import parse_metrics, same_progress, trainer_status

Logger = logging.Logger | logging.LoggerAdapter[Any]
Key = tuple[str, str]
#: Writes a trainerStatus block for a resource (raises on failure; the reader counts it).
Writer = Callable[[dict[str, Any]], Awaitable[None]]
#: At most this much of a trainer's answer is read (its gauges are a few kB).
MAX_BODY = 1 << 20


class ReadFailed(Exception):
    """A read of the gauges failed; ``kind`` labels the failure counter."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


class ProgressReader:
    """Follows the running trainers of the watched resources, one task each."""

    def __init__(self, interval: float, metrics: Metrics, clock: Callable[[], str]) -> None:
        self.interval = interval
        self.metrics = metrics
        self.clock = clock
        self._tasks: dict[Key, tuple[str, asyncio.Task[None]]] = {}
        self._last: dict[Key, dict[str, Any]] = {}
        self._session: aiohttp.ClientSession | None = None

    def following(self, key: Key) -> str | None:
        """The URL read for ``key``, or None (for tests)."""
        entry = self._tasks.get(key)
        return entry[0] if entry is not None and not entry[1].done() else None

    def task(self, key: Key) -> asyncio.Task[None] | None:
        """The task that reads for ``key``, or None."""
        entry = self._tasks.get(key)
        return entry[1] if entry is not None else None

    def follow(self, key: Key, url: str, previous: Mapping[str, Any] | None, write: Writer, logger: Logger) -> None:
        """Read ``url`` every ``interval`` seconds for ``key`` (a no-op when it already does)."""
        if self.interval <= 0:
            return
        entry = self._tasks.get(key)
        if entry is not None and entry[0] == url and not entry[1].done():
            return
        self.stop(key)
        if previous:
            self._last[key] = dict(previous)
        task = asyncio.create_task(self._loop(key, url, write, logger), name=f"progress {key}")
        self._tasks[key] = (url, task)

    def stop(self, key: Key) -> None:
        entry = self._tasks.pop(key, None)
        self._last.pop(key, None)
        if entry is not None and entry[1] is not asyncio.current_task():
            entry[1].cancel()

    async def close(self) -> None:
        for key in list(self._tasks):
            self.stop(key)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def read(self, url: str) -> str:
        """The trainer's exposition text; :class:`ReadFailed` when it cannot be had."""
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=max(1.0, min(5.0, self.interval)))
            self._session = aiohttp.ClientSession(timeout=timeout)
        try:
            async with self._session.get(url, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise ReadFailed("http", f"{url} answered {resp.status}")
                body = b""
                while len(body) <= MAX_BODY and (chunk := await resp.content.read(MAX_BODY + 1 - len(body))):
                    body += chunk
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ReadFailed("unreachable", f"{url}: {exc!r}") from None
        if len(body) > MAX_BODY:
            raise ReadFailed("parse", f"{url} answered more than {MAX_BODY} bytes")
        return body.decode("utf-8", errors="replace")

    async def _loop(self, key: Key, url: str, write: Writer, logger: Logger) -> None:
        while True:
            await self.poll_once(key, url, write, logger)
            await asyncio.sleep(self.interval)

    async def poll_once(self, key: Key, url: str, write: Writer, logger: Logger) -> None:
        """One read of ``url``; ``write`` is called when the progress changed since the last write."""
        last = self._last.get(key)
        try:
            text = await self.read(url)
            try:  # what the trainer serves is untrusted: anything it cannot say is a parse failure
                block = trainer_status(parse_metrics(text), self.clock(), last)
            except ValueError as exc:
                raise ReadFailed("parse", f"{url}: {exc}") from None
        except ReadFailed as exc:
            self.metrics.progress_failures.labels(kind=exc.kind).inc()
            logger.debug(f"Could not read the trainer's progress of {key[0]}/{key[1]}: {exc}")
            return
        if same_progress(block, last):
            return
        try:
            await write(block)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.metrics.progress_failures.labels(kind="write").inc()
            logger.debug(f"Could not write the progress of {key[0]}/{key[1]}: {exc!r}")
            return
        self._last[key] = block
        pct = block.get("progressPercentage")
        if isinstance(pct, int):
            self.metrics.progress.labels(namespace=key[0], name=key[1]).set(pct)
