"""``eft-operator``: run the operator with the settings from the environment (see :mod:`eft_operator.config`).

Watches the namespaces in ``EFT_WATCH_NAMESPACES`` (or the whole cluster) once this replica holds the
leader Lease (:mod:`eft_operator.leader`), serves ``/metrics`` on ``EFT_METRICS_PORT`` and the probes
(``/healthz``, ``/readyz``, ``/leader``: :mod:`eft_operator.probes`) on ``EFT_HEALTH_PORT``.
``eft-operator release-finalizers`` releases the operator's Jobs and Pods (:mod:`eft_operator.release`).
It logs in with ``$KUBECONFIG`` (or ``~/.kube/config``) when there is one, else with the in-cluster service
account, so the same command runs in a pod and on a laptop against a cluster. Log lines name the resource
(``[namespace/name]``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, cast

import kopf
from aiohttp import web

from eft_operator import children, connection, release
from eft_operator.config import Settings, SettingsError
from eft_operator.handlers import register
from eft_operator.leader import EXIT_LEADERSHIP_LOST, LeaderElector, leader_gauge
from eft_operator.probes import serve
from eft_operator.reconciler import Reconciler
from eft_operator.release import release_dropped

logger = logging.getLogger("eft_operator")


def build_registry() -> kopf.OperatorRegistry:
    """The operator's handlers plus its login (eft_operator.connection: kubeconfig or in-cluster)."""
    registry = register(kopf.OperatorRegistry())
    kopf.on.login(id="login", registry=registry)(connection.login)
    return registry


async def run(settings: Settings, stop_flag: asyncio.Event | None = None) -> None:
    """Wait for the Lease (a standby does nothing else), then run kopf's handlers while renewing it.

    kopf runs standalone, always: the Lease decides which replica acts (kopf's own peering would pause
    every replica whenever two of equal priority meet). Losing the Lease ends the process at once with
    exit status 1 (no handler may write after another replica took over); the kubelet restarts it as a
    standby. A graceful stop (SIGTERM) releases the Lease, so a standby takes over at its next try.
    """
    client = children.Client(connection.connection_info(), retry_delays=(), relogin=connection.connection_info)
    elector = LeaderElector(client, settings.lease)
    reconciler = Reconciler(settings)
    stop = stop_flag or asyncio.Event()
    operator: list[asyncio.Task[None]] = []
    servers = await _serve(settings, elector, reconciler, lambda: not operator or not operator[0].done())
    _on_signals(stop)
    try:
        if settings.lease.enabled:
            if not await _until(asyncio.create_task(elector.acquire()), stop):
                return
            await release_dropped(client, settings)
        operator.append(asyncio.create_task(_kopf(settings, reconciler, stop)))
        if settings.lease.enabled:
            lost = asyncio.create_task(elector.hold())
            await asyncio.wait({operator[0], lost}, return_when=asyncio.FIRST_COMPLETED)
            if lost.done():
                logger.error(f"Stopped leading ({lost.result()}); exiting so that this replica restarts as a standby.")
                logging.shutdown()
                os._exit(EXIT_LEADERSHIP_LOST)
            lost.cancel()
        await operator[0]
    finally:
        await elector.release()
        for server in servers:
            await server.cleanup()
        await client.close()


async def _serve(
    settings: Settings, elector: LeaderElector, reconciler: Reconciler, alive: Callable[[], bool]
) -> list[web.AppRunner]:
    """The probes and ``/metrics`` (with ``eft_leader``), on every replica from the start: a standby is
    scraped and probed like the leader."""
    enabled = settings.lease.enabled
    state = elector.state if enabled else lambda: {"identity": "", "leader": True, "holder": ""}
    leader_gauge(reconciler.metrics.registry, lambda: elector.leading or not enabled)
    probes = await serve(state, alive, "0.0.0.0", settings.health_port)
    metrics = await reconciler.metrics.start_server("0.0.0.0", settings.metrics_port)
    return [probes, metrics]


async def _kopf(settings: Settings, reconciler: Reconciler, stop: asyncio.Event) -> None:
    registry = build_registry()

    async def stopped(**_: Any) -> None:
        """kopf replaces this process's SIGTERM handler with its own, so a SIGTERM stops kopf without
        setting ``stop``; kopf's waiter on ``stop`` then counts as a hung task, waited for 5 s before the
        Lease is released (measured: every graceful stop took 5.0 s). Its cleanup sets it."""
        stop.set()

    kopf.on.cleanup(id="stop-flag", registry=registry)(stopped)
    await kopf.operator(
        registry=registry,
        memo=kopf.Memo(reconciler=reconciler, metrics_port=None),  # run() serves /metrics
        clusterwide=settings.clusterwide,
        namespaces=list(settings.watch_namespaces),
        standalone=True,
        stop_flag=stop,
    )


async def _until(task: asyncio.Task[None], stop: asyncio.Event) -> bool:
    """Wait for ``task`` unless ``stop`` is set first (then cancel it): whether the task finished."""
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    for t in (task, stopped):
        t.cancel()
    return task.done() and not task.cancelled()


def _on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop`` (kopf installs its own handlers once it runs)."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["release-finalizers"]:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        return release.main(args[1:])
    if args:
        print(f"eft-operator: unknown arguments {args}; usage: eft-operator [release-finalizers ...]", file=sys.stderr)
        return 2
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"eft-operator: {exc}", file=sys.stderr)
        return 2
    # kopf's formatter prefixes each line about a resource with [namespace/name].
    kopf.configure(log_format=cast(Any, "%(asctime)s %(levelname)s %(name)s: %(message)s"), log_prefix=True)
    logging.getLogger().setLevel(settings.log_level)
    # uvloop: a libuv event loop; under a burst of resources it cuts the operator's create->Job p90 by a
    # third (bench/bench_operator_burst.py). Plain asyncio where it is not installed.
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(settings))
    else:
        uvloop.run(run(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
