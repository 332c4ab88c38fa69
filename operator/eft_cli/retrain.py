"""``eft retrain NAME``: start a new run of an EmbeddingFinetune without editing its spec.

It sets the annotation ``finetune.eft.dev/retrain`` to the current time (as ``kubectl rollout restart`` sets
``kubectl.kubernetes.io/restartedAt``); the operator starts one run for each new value, with trigger
``manual``, once no run is going (or at once with ``spec.retrain.concurrencyPolicy: Replace``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

from eft_api.retrain import RETRAIN_ANNOTATION
from eft_api.spec import API_GROUP, API_VERSION, PLURAL

HELP = __doc__ or ""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "retrain",
        help="start a new run of a resource without a spec edit",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", metavar="NAME", help="the EmbeddingFinetune's name")
    p.add_argument("-n", "--namespace", help="its namespace (default: the context's)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context (default: the current context)")
    p.set_defaults(handler=run)


def retrain_patch(now: dt.datetime) -> dict[str, Any]:
    """The merge patch that asks for a run: the annotation set to ``now`` (a new value each time)."""
    stamp = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"metadata": {"annotations": {RETRAIN_ANNOTATION: stamp}}}


def request_run(api_client: Any, namespace: str, name: str, now: dt.datetime | None = None) -> str:
    """Set the annotation on ``namespace/name``; returns the value set."""
    from kubernetes import client

    patch = retrain_patch(now or dt.datetime.now(dt.UTC))
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        API_GROUP, API_VERSION, namespace, PLURAL, name, patch
    )
    return str(patch["metadata"]["annotations"][RETRAIN_ANNOTATION])


def run(args: argparse.Namespace) -> int:
    from eft_cli.server import load_client

    try:
        api_client, context_namespace = load_client(args.kubeconfig, args.context)
        namespace = args.namespace or context_namespace
        value = request_run(api_client, namespace, args.name)
    except Exception as exc:  # kubeconfig missing, cluster unreachable, not found, forbidden: say so, exit 2
        status = getattr(exc, "status", None)
        what = f"{status} {getattr(exc, 'reason', '')}".strip() if status else str(exc)
        print(f"eft retrain: cannot annotate EmbeddingFinetune {args.name}: {what}", file=sys.stderr)
        return 2
    print(f"embeddingfinetune/{args.name} in {namespace}: asked for a new run ({RETRAIN_ANNOTATION}={value})")
    return 0
