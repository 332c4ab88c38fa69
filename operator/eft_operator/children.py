"""Thin async I/O with the Kubernetes API: read the resource, create-if-absent its children, read Jobs and Pods.

Requests go through kopf's authenticated API client (``kopf._cogs.clients.api``), so they use the same
credentials, connection pool and bounded retries (``settings.networking.error_backoffs``: 5xx, 429 with
Retry-After, timeouts) as kopf's own watches, whichever login handler is active (in-cluster, kubeconfig,
or a test server). That module is kopf-internal: this file is the one place that touches it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kopf._cogs.clients import api, errors
from kopf._cogs.configs.configuration import OperatorSettings

from eft_api import contract
from eft_api.spec import API_GROUP, API_VERSION, PLURAL

NotFound = errors.APINotFoundError
Conflict = errors.APIConflictError
APIError = errors.APIError
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


class OwnedByAnother(Exception):
    """A child with our deterministic name exists but another object owns it: never adopted."""

    def __init__(self, kind: str, namespace: str, name: str, owners: list[str]) -> None:
        self.kind, self.namespace, self.name, self.owners = kind, namespace, name, owners
        who = ", ".join(owners) if owners else "no owner"
        super().__init__(
            f"{kind} {namespace}/{name} already exists and is not owned by this resource (owned by {who}); "
            "delete or rename it to let the run start"
        )


def _url(kind: str, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    base = {
        "EmbeddingFinetune": f"/apis/{API_GROUP}/{API_VERSION}/namespaces/{namespace}/{PLURAL}",
        "Job": f"/apis/batch/v1/namespaces/{namespace}/jobs",
        "ConfigMap": f"/api/v1/namespaces/{namespace}/configmaps",
        "Service": f"/api/v1/namespaces/{namespace}/services",
        "Pod": f"/api/v1/namespaces/{namespace}/pods",
    }[kind]
    return base + (f"/{name}" if name else "") + (f"/{subresource}" if subresource else "")


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


class Client:
    """The API calls the reconciler makes (each one request, retried by kopf on transient failures)."""

    def __init__(self, settings: OperatorSettings, logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        self.settings = settings
        self.logger = logger

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = await api.get(_url(kind, namespace, name), settings=self.settings, logger=self.logger)
        except NotFound:
            return None
        return obj

    async def ensure(self, body: Mapping[str, Any], owner_uid: str) -> tuple[dict[str, Any], bool]:
        """Create ``body`` unless it exists; on 409 read the existing one and check its owner uid.

        Returns the object and whether this call created it; raises :class:`OwnedByAnother` for a child
        that belongs to someone else.
        """
        kind, meta = str(body["kind"]), body["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        try:
            created: dict[str, Any] = await api.post(
                _url(kind, namespace), payload=body, settings=self.settings, logger=self.logger
            )
            return created, True
        except Conflict:
            existing = await self.get(kind, namespace, name)
            if existing is None:  # deleted in between: one more try, then let the caller retry
                created = await api.post(
                    _url(kind, namespace), payload=body, settings=self.settings, logger=self.logger
                )
                return created, True
            if not owned_by(existing, owner_uid):
                refs = (existing.get("metadata") or {}).get("ownerReferences") or []
                raise OwnedByAnother(
                    kind, namespace, name, [f"{r.get('kind')} {r.get('name')} uid {r.get('uid')}" for r in refs]
                ) from None
            return existing, False

    async def pods_of_run(self, namespace: str, run_id: str) -> list[dict[str, Any]]:
        selector = f"{contract.LABEL_RUN}={run_id}"
        listing = await api.get(
            _url("Pod", namespace) + f"?labelSelector={selector}", settings=self.settings, logger=self.logger
        )
        items = listing.get("items") or []
        # Filter here as well: selectors are a server's courtesy (test servers may ignore them).
        return [p for p in items if ((p.get("metadata") or {}).get("labels") or {}).get(contract.LABEL_RUN) == run_id]

    async def patch(
        self, kind: str, namespace: str, name: str, patch: Mapping[str, Any], subresource: str | None = None
    ) -> None:
        await api.patch(
            _url(kind, namespace, name, subresource),
            payload=patch,
            headers=MERGE_PATCH,
            settings=self.settings,
            logger=self.logger,
        )

    async def delete_job(self, namespace: str, name: str) -> bool:
        """Delete a Job and (in the background) its pods; False when it was already gone."""
        try:
            await api.delete(
                _url("Job", namespace, name),
                payload={"propagationPolicy": "Background"},
                settings=self.settings,
                logger=self.logger,
            )
        except NotFound:
            return False
        return True
