"""``eft-operator``: run the operator with the settings from the environment (see :mod:`eft_operator.config`).

Watches the namespaces in ``EFT_WATCH_NAMESPACES`` (or the whole cluster), standalone or peered through
``EFT_PEERING_NAME``, serves ``/metrics`` on ``EFT_METRICS_PORT`` and ``/healthz`` on ``EFT_HEALTH_PORT``.
It logs in with ``$KUBECONFIG`` (or ``~/.kube/config``) when there is one, else with the in-cluster service
account, so the same command runs in a pod and on a laptop against a cluster. Log lines name the resource
(``[namespace/name]``).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any, cast

import kopf

from eft_operator.config import Settings, SettingsError
from eft_operator.handlers import register
from eft_operator.reconciler import Reconciler


def build_registry() -> kopf.OperatorRegistry:
    """The operator's handlers plus the in-cluster / kubeconfig login of the kubernetes client."""
    registry = register(kopf.OperatorRegistry())
    kopf.on.login(id="login", registry=registry)(kopf.login_via_client)
    return registry


async def run(settings: Settings, stop_flag: asyncio.Event | None = None) -> None:
    await kopf.operator(
        registry=build_registry(),
        memo=kopf.Memo(reconciler=Reconciler(settings)),
        clusterwide=settings.clusterwide,
        namespaces=list(settings.watch_namespaces),
        standalone=settings.standalone,
        peering_name=settings.peering_name,
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
        stop_flag=stop_flag,
    )


def main() -> int:
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
