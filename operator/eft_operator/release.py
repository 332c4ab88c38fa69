"""Let go of the operator's Jobs and Pods: remove its finalizer ``finetune.eft.dev/record-outcome``.

The operator keeps that finalizer on a run's Job and Pods until the run's outcome is in status. Once the
operator is gone (uninstalled, scaled to 0) or no longer watches a namespace, nothing would remove it, and
a namespace being deleted would stay ``Terminating``. This module removes it from every Job the operator
owns (an owner reference to an EmbeddingFinetune) and every Pod of such a Job (or of a Job already
gone), in the given namespaces or all of them:

* ``eft-operator release-finalizers`` (the Helm chart's ``pre-delete`` hook runs it), and
* at start-up, for the namespaces dropped from ``EFT_WATCH_NAMESPACES`` since the previous start (the
  Lease remembers the watched namespaces in an annotation).

:func:`ours` and :func:`dropped_namespaces` are pure; the rest is thin I/O.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eft_api.spec import API_GROUP, KIND
from eft_operator import children, connection
from eft_operator.config import Settings, SettingsError
from eft_operator.leader import lease_path

logger = logging.getLogger("eft_operator.release")
#: The Lease annotation that remembers the namespaces the operator watched ("*": all of them).
WATCHED_ANNOTATION = "finetune.eft.dev/watched-namespaces"
PAGE = 500


def _controller(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return next((r for r in refs if r.get("controller")), {})


def ours(jobs: Sequence[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The Jobs owned by an EmbeddingFinetune and the Pods of those Jobs (or of Jobs no longer there)
    that still carry the operator's finalizer, Jobs first."""
    all_jobs = {str((j.get("metadata") or {}).get("uid")) for j in jobs}
    owned = [
        j
        for j in jobs
        if _controller(j).get("kind") == KIND and str(_controller(j).get("apiVersion", "")).startswith(f"{API_GROUP}/")
    ]
    owned_uids = {str((j.get("metadata") or {}).get("uid")) for j in owned}
    found: list[Mapping[str, Any]] = [{**j, "kind": "Job"} for j in owned if children.has_finalizer(j)]
    for pod in pods:
        owner = _controller(pod)
        if not children.has_finalizer(pod) or owner.get("kind") != "Job":
            continue
        if str(owner.get("uid")) in owned_uids or str(owner.get("uid")) not in all_jobs:
            found.append({**pod, "kind": "Pod"})
    return found


def dropped_namespaces(previous: str | None, current: Sequence[str]) -> tuple[list[str], bool]:
    """Which namespaces the operator stopped watching: (names, ``everything_else``).

    ``previous`` is the Lease's annotation (None: no record, nothing to release). ``everything_else``: it
    watched the whole cluster before and now only ``current``, so every other namespace is released.
    """
    if previous is None:
        return [], False
    if previous == "*":
        return [], bool(current)
    before = [ns for ns in previous.split(",") if ns]
    return ([ns for ns in before if ns not in current] if current else []), False


@dataclass
class Released:
    jobs: int = 0
    pods: int = 0


async def pages(client: children.Client, path: str) -> AsyncIterator[list[dict[str, Any]]]:
    """The objects at ``path``, a page of at most :data:`PAGE` at a time (only one page is held)."""
    token = ""
    while True:
        query = [("limit", str(PAGE))] + ([("continue", token)] if token else [])
        page = await client.request("GET", path, query=query)
        token = str((page.get("metadata") or {}).get("continue") or "")
        yield list(page.get("items") or [])
        if not token:
            return


async def list_all(client: children.Client, path: str) -> list[dict[str, Any]]:
    return [item async for page in pages(client, path) for item in page]


async def release_finalizers(
    client: children.Client, namespaces: Sequence[str] | None = None, exclude: Sequence[str] = ()
) -> Released:
    """Remove the operator's finalizer from its Jobs and Pods in ``namespaces`` (None: every namespace
    except ``exclude``). Raises :class:`children.APIError` when a list or patch is refused."""
    scopes = [f"/namespaces/{ns}" for ns in namespaces] if namespaces is not None else [""]
    done = Released()
    for scope in scopes:
        jobs = await list_all(client, f"/apis/batch/v1{scope}/jobs")
        pods = await list_all(client, f"/api/v1{scope}/pods")
        for obj in ours(jobs, pods):
            meta = obj.get("metadata") or {}
            if meta.get("namespace") in exclude or not await client.release(obj):
                continue
            logger.info(f"Released {obj['kind']} {meta.get('namespace')}/{meta.get('name')}.")
            if obj["kind"] == "Job":
                done.jobs += 1
            else:
                done.pods += 1
    return done


async def release_dropped(client: children.Client, settings: Settings) -> None:
    """At start-up (holding the Lease): release the namespaces no longer watched, then record the current ones.

    Best effort: a namespace the operator may no longer read (its Role went with it) is logged with the
    command that releases it.
    """
    lease = settings.lease
    path = lease_path(lease.namespace, lease.name)
    try:
        body = await client.request("GET", path)
    except children.APIError as exc:
        logger.warning(f"Could not read Lease {lease.namespace}/{lease.name} ({exc}); released nothing at start-up.")
        return
    previous = ((body.get("metadata") or {}).get("annotations") or {}).get(WATCHED_ANNOTATION)
    names, everything_else = dropped_namespaces(previous, settings.watch_namespaces)
    try:
        if everything_else:
            await release_finalizers(client, None, exclude=settings.watch_namespaces)
        elif names:
            await release_finalizers(client, names)
    except children.APIError as exc:
        which = ", ".join(names) or "the namespaces no longer watched"
        logger.warning(
            f"Could not release the finalizers in {which} ({exc}); run `eft-operator release-finalizers "
            f"--namespace NAME` with rights on Jobs and Pods there."
        )
    record = ",".join(settings.watch_namespaces) or "*"
    if record != previous:
        patch = {"metadata": {"annotations": {WATCHED_ANNOTATION: record}}}
        try:
            await client.request("PATCH", path, patch)
        except children.APIError as exc:
            logger.warning(f"Could not record the watched namespaces on Lease {lease.namespace}/{lease.name}: {exc}")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="eft-operator release-finalizers",
        description="Remove the operator's finalizer from every Job and Pod it owns (before an uninstall, or "
        "when a namespace is stuck Terminating while the operator is down).",
    )
    parser.add_argument("--namespace", "-n", action="append", default=[], help="a namespace (repeatable)")
    parser.add_argument("--all-namespaces", "-A", action="store_true", help="every namespace")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, else in-cluster)")
    return parser.parse_args(list(argv))


async def _release_command(args: argparse.Namespace, watched: Sequence[str]) -> Released:
    client = children.Client(connection.connection_info(args.kubeconfig))
    try:
        namespaces = None if args.all_namespaces else (args.namespace or list(watched) or None)
        return await release_finalizers(client, namespaces)
    finally:
        await client.close()


def main(argv: Sequence[str]) -> int:
    """``eft-operator release-finalizers [--namespace NS]... [--all-namespaces]``; default: the namespaces
    in ``EFT_WATCH_NAMESPACES``, else all. Exit 0 when everything was released, 1 on an API error."""
    args = parse_args(argv)
    try:
        watched = Settings.from_env().watch_namespaces
    except SettingsError as exc:
        print(f"eft-operator release-finalizers: {exc}")
        return 2
    try:
        done = asyncio.run(_release_command(args, watched))
    except children.APIError as exc:
        print(f"eft-operator release-finalizers: the API refused a request: {exc}")
        return 1
    print(f"Released the finalizer {children.FINALIZER} from {done.jobs} Jobs and {done.pods} Pods.")
    return 0
