"""Prometheus metrics of the operator, on their own registry, served by a small aiohttp app.

Labels are bounded: ``result``, ``kind`` and ``phase`` take a few fixed values; the only per-resource
series are ``eft_headline_metric{namespace,name,model}`` and ``eft_run_progress_percent{namespace,name}``,
removed when their resource is deleted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from eft_operator.status import PHASES


class Metrics:
    """The operator's metrics (names fixed by the common contract)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.reconciles = Counter(
            "eft_reconciles",
            "Reconciliations of EmbeddingFinetune resources, by result.",
            ["result"],
            registry=self.registry,
        )
        self.errors = Counter(
            "eft_reconcile_errors", "Reconciliation errors, by kind.", ["kind"], registry=self.registry
        )
        self.duration = Histogram(
            "eft_reconcile_duration_seconds",
            "Time one reconciliation took.",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.runs = Gauge(
            "eft_runs", "Current runs of the watched resources, by phase.", ["phase"], registry=self.registry
        )
        self.run_duration = Histogram(
            "eft_run_duration_seconds",
            "Duration of finished runs (Job created to finished).",
            registry=self.registry,
            buckets=(60, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400),
        )
        self.headline = Gauge(
            "eft_headline_metric",
            "The latest successful run's headline metric, for the base and fine-tuned model.",
            ["namespace", "name", "model"],
            registry=self.registry,
        )
        self.progress = Gauge(
            "eft_run_progress_percent",
            "The current run's progress in percent (status.trainerStatus.progressPercentage).",
            ["namespace", "name"],
            registry=self.registry,
        )
        self.progress_failures = Counter(
            "eft_progress_read_failures",
            "Reads of a trainer's metrics port that failed, by kind (unreachable, http, parse, write).",
            ["kind"],
            registry=self.registry,
        )
        self._phases: dict[tuple[str, str], str] = {}
        for phase in PHASES:
            self.runs.labels(phase=phase).set(0)

    def observe_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        phase = str((status.get("currentRun") or {}).get("phase") or "")
        if phase in PHASES:
            self._phases[(namespace, name)] = phase
        else:
            self._phases.pop((namespace, name), None)
        self._refresh_phases()
        pct = (status.get("trainerStatus") or {}).get("progressPercentage")
        if isinstance(pct, int):
            self.progress.labels(namespace=namespace, name=name).set(pct)
        results = status.get("results") or {}
        for model in ("base", "finetuned"):
            value = results.get(model)
            if isinstance(value, (int, float)):
                self.headline.labels(namespace=namespace, name=name, model=model).set(float(value))

    def forget(self, namespace: str, name: str) -> None:
        """The resource is gone: drop its series."""
        self._phases.pop((namespace, name), None)
        self._refresh_phases()
        for model in ("base", "finetuned"):
            with contextlib.suppress(KeyError):
                self.headline.remove(namespace, name, model)
        with contextlib.suppress(KeyError):
            self.progress.remove(namespace, name)

    def _refresh_phases(self) -> None:
        counts = dict.fromkeys(PHASES, 0)
        for phase in self._phases.values():
            counts[phase] += 1
        for phase, n in counts.items():
            self.runs.labels(phase=phase).set(n)

    def render(self) -> bytes:
        data: bytes = generate_latest(self.registry)
        return data

    async def start_server(self, host: str, port: int) -> web.AppRunner:
        """Serve ``/metrics`` on ``host:port``; stop with ``await runner.cleanup()``."""

        async def handle(_: web.Request) -> web.Response:
            return web.Response(body=self.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_get("/metrics", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        return runner
