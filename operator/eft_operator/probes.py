"""The operator's probes on ``EFT_HEALTH_PORT``, served from the start (a standby answers too).

* ``/healthz`` (liveness): 200 while the event loop answers and, on the leader, kopf is running.
* ``/readyz`` (readiness): 200 on every replica that runs, the leader and the standbys (a standby is
  ready to take over; a readiness that failed on standbys would let a PodDisruptionBudget block every
  drain). The JSON body says which replica leads.
* ``/leader``: 200 on the leader, 503 on a standby, with the same JSON body
  (``{"identity": ..., "leader": true|false, "holder": ..., "lease": "namespace/name"}``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

State = Callable[[], dict[str, Any]]


def app(state: State, alive: Callable[[], bool]) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"alive": alive()}, status=200 if alive() else 503)

    async def readyz(_: web.Request) -> web.Response:
        return web.json_response(state())

    async def leader(_: web.Request) -> web.Response:
        body = state()
        return web.json_response(body, status=200 if body.get("leader") else 503)

    application = web.Application()
    application.router.add_get("/healthz", healthz)
    application.router.add_get("/readyz", readyz)
    application.router.add_get("/leader", leader)
    return application


async def serve(state: State, alive: Callable[[], bool], host: str, port: int) -> web.AppRunner:
    """Start the probe server; the caller cleans the returned runner up."""
    runner = web.AppRunner(app(state, alive), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
