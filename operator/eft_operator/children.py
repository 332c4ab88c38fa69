"""Thin async I/O with the Kubernetes API: read the resource, create-if-absent its children, read Jobs and Pods.

Requests go over one aiohttp session to the API server that :mod:`eft_operator.connection` found (a
kubeconfig or the in-cluster service account, read by kopf's own login functions), with bounded retries of what may pass
(5xx, 429 honouring ``Retry-After``, timeouts and refused connections). Every other answer raises
:class:`APIError` with the API's status code and message, so that callers can say why a request was
refused (a 422 or an admission 403 is not worth retrying as is).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import aiohttp
import kopf

from eft_api import contract
from eft_api.spec import API_GROUP, API_VERSION, PLURAL
from eft_operator.config import image_repository
from eft_operator.render import OUTCOME_FINALIZER

MERGE_PATCH = "application/merge-patch+json"
#: Seconds between retries of a request that may pass (5xx, 429 without Retry-After, timeouts).
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)
REQUEST_TIMEOUT = 60.0
#: Connections the operator keeps to the API server (HTTP/1.1: one request at a time on each).
POOL_SIZE = 16
FINALIZER = OUTCOME_FINALIZER


class APIError(Exception):
    """The API answered with an error (or could not be reached: ``status`` 0)."""

    def __init__(self, status: int, reason: str, message: str, method: str = "", path: str = "") -> None:
        self.status, self.reason, self.message, self.method, self.path = status, reason, message, method, path
        #: The answer's Retry-After header (seconds), if it had one.
        self.retry_after: str | None = None
        super().__init__(f"{method} {path}: {status} {reason}: {message}".strip())

    @property
    def transient(self) -> bool:
        """Whether it may pass by itself (server trouble, throttling, a conflict of versions)."""
        return self.status in (0, 409, 429) or self.status >= 500

    @property
    def refused(self) -> bool:
        """The API refused the request as it is (validation, admission, quota, RBAC): retrying the same fails."""
        return self.status in (400, 403, 404, 405, 410, 413, 415, 422)


class NotFound(APIError):
    pass


class Conflict(APIError):
    pass


class OwnedByAnother(Exception):
    """A child with our deterministic name exists but another object owns it: never adopted."""

    def __init__(self, kind: str, namespace: str, name: str, owners: list[str]) -> None:
        self.kind, self.namespace, self.name, self.owners = kind, namespace, name, owners
        who = ", ".join(owners) if owners else "no owner"
        super().__init__(
            f"{kind} {namespace}/{name} already exists and is not owned by this resource (owned by {who}); "
            "delete or rename it to let the run start"
        )


def controlled_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Whether ``obj``'s controller ownerReference names ``uid``."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return bool(uid) and any(r.get("controller") and r.get("uid") == uid for r in refs)


def _trainer(spec: Mapping[str, Any] | None) -> tuple[Any, ...] | None:
    """The trainer container's name, image repository (a webhook may pin the tag to a digest), command, args."""
    for c in (spec or {}).get("containers") or []:
        if c.get("name") == contract.TRAINER_CONTAINER:
            return (c.get("name"), image_repository(str(c.get("image") or "")), c.get("command"), c.get("args"))
    return None


def made_by(pod: Mapping[str, Any], job: Mapping[str, Any]) -> bool:
    """Whether ``pod`` is one the Job made: controlled by its uid AND running its template's containers.

    Labels are anyone's to copy, and the Job controller adopts an orphan pod whose labels match its selector,
    so a tenant's pod with the run's labels can end up controlled by the Job. It still cannot run another
    trainer container (image repository, command, arguments) than the Job's template and be believed; other
    containers (a service mesh's sidecar) do not matter. Without a uid (kmock assigns none) the container
    alone decides.
    """
    uid = str((job.get("metadata") or {}).get("uid") or "")
    template = ((job.get("spec") or {}).get("template") or {}).get("spec")
    if uid and not controlled_by(pod, uid):
        return False
    expected = _trainer(template)
    return expected is not None and _trainer(pod.get("spec")) == expected


def _url(kind: str, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    base = {
        "EmbeddingFinetune": f"/apis/{API_GROUP}/{API_VERSION}/namespaces/{namespace}/{PLURAL}",
        "Job": f"/apis/batch/v1/namespaces/{namespace}/jobs",
        "ConfigMap": f"/api/v1/namespaces/{namespace}/configmaps",
        "Service": f"/api/v1/namespaces/{namespace}/services",
        "NetworkPolicy": f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies",
        "Pod": f"/api/v1/namespaces/{namespace}/pods",
        "Event": f"/api/v1/namespaces/{namespace}/events",
    }[kind]
    return base + (f"/{name}" if name else "") + (f"/{subresource}" if subresource else "")


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


def has_finalizer(obj: Mapping[str, Any]) -> bool:
    return FINALIZER in ((obj.get("metadata") or {}).get("finalizers") or [])


def _status_message(body: str | bytes | None) -> tuple[str, str]:
    """The reason and message of a Kubernetes ``Status`` body (or the raw text)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    try:
        data = json.loads(text)
    except ValueError:
        return "", text[:500]
    if not isinstance(data, dict):
        return "", text[:500]
    return str(data.get("reason") or ""), str(data.get("message") or text[:500])


class Client:
    """The API calls the reconciler makes, each retried a bounded number of times on what may pass."""

    def __init__(
        self,
        info: kopf.ConnectionInfo,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        relogin: Callable[[], kopf.ConnectionInfo] | None = None,
    ) -> None:
        """``relogin`` is called once when the API server answers 401 (a rotated service-account token)."""
        self.info = info
        self.relogin = relogin
        # The session does not trust the environment: aiohttp would look up proxy variables in a worker
        # thread on every request, and under a burst that thread hop doubled create->Job latency
        # (bench/bench_operator_burst.py). Like kopf's own client, the operator reaches the API server
        # directly, or through the kubeconfig's proxy-url. A bounded pool: a burst reuses connections
        # instead of opening (and TLS-handshaking) one per concurrent request.
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=POOL_SIZE, ssl=info.as_ssl_context()),
            trust_env=False,
            read_bufsize=2**21,
        )
        self.timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        self.retry_delays = tuple(retry_delays)

    async def close(self) -> None:
        await self.session.close()

    def _headers(self, content_type: str | None) -> dict[str, str]:
        return {
            "Accept": "application/json",
            "Content-Type": content_type or "application/json",
            **self.info.as_http_headers(),
        }

    async def _request(
        self, method: str, path: str, body: Any, content_type: str | None, query: Sequence[tuple[str, str]]
    ) -> Any:
        """One HTTP request to the API server: the decoded JSON answer, or :class:`APIError`."""
        async with self.session.request(
            method,
            f"{self.info.server.rstrip('/')}{path}",
            params=list(query),
            headers=self._headers(content_type),
            data=None if body is None else json.dumps(body),
            timeout=self.timeout,
            proxy=self.info.proxy_url,
        ) as resp:
            data = await resp.read()
            if resp.status >= 400:
                reason, message = _status_message(data)
                error = _error(resp.status, reason or str(resp.reason or ""), message, method, path)
                error.retry_after = resp.headers.get("Retry-After")
                raise error
        return json.loads(data) if data else {}

    async def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str | None = None,
        query: Iterable[tuple[str, str]] = (),
    ) -> Any:
        params, relogged = list(query), False
        attempt = 0
        while True:
            try:
                return await self._request(method, path, body, content_type, params)
            except APIError as exc:
                error = exc
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                error = APIError(0, type(exc).__name__, str(exc) or type(exc).__name__, method, path)
            if error.status == 401 and self.relogin is not None and not relogged:
                self.info, relogged = self.relogin(), True  # a rotated token: log in again, once
                continue
            if (error.status not in (0, 429) and error.status < 500) or attempt >= len(self.retry_delays):
                raise error
            delay = self.retry_delays[attempt]
            if error.retry_after and str(error.retry_after).isdigit():
                delay = max(delay, min(float(error.retry_after), 60.0))
            attempt += 1
            await asyncio.sleep(delay)

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = await self._call("GET", _url(kind, namespace, name))
        except NotFound:
            return None
        return obj

    async def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        created: dict[str, Any] = await self._call("POST", _url(str(body["kind"]), str(meta["namespace"])), body)
        return created

    async def ensure(self, body: Mapping[str, Any], owner_uid: str) -> tuple[dict[str, Any], bool]:
        """Create ``body`` unless it exists; on 409 read the existing one and check its owner uid.

        Returns the object and whether this call created it; raises :class:`OwnedByAnother` for a child
        that belongs to someone else.
        """
        kind, meta = str(body["kind"]), body["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        try:
            return await self.create(body), True
        except Conflict:
            existing = await self.get(kind, namespace, name)
            if existing is None:  # deleted in between: one more try, then let the caller retry
                return await self.create(body), True
            if not owned_by(existing, owner_uid):
                refs = (existing.get("metadata") or {}).get("ownerReferences") or []
                raise OwnedByAnother(
                    kind, namespace, name, [f"{r.get('kind')} {r.get('name')} uid {r.get('uid')}" for r in refs]
                ) from None
            return existing, False

    async def pods_of_run(
        self, namespace: str, run_id: str, job: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The run's pods; with ``job``, only those :func:`made_by` it (a label alone is anyone's to set)."""
        selector = f"{contract.LABEL_RUN}={run_id}"
        listing = await self._call("GET", _url("Pod", namespace), query=[("labelSelector", selector)])
        items = listing.get("items") or []
        # Filter here as well: selectors are a server's courtesy (test servers may ignore them).
        pods = [p for p in items if ((p.get("metadata") or {}).get("labels") or {}).get(contract.LABEL_RUN) == run_id]
        return pods if job is None else [p for p in pods if made_by(p, job)]

    async def events_of(self, namespace: str, kind: str, name: str, uid: str) -> list[dict[str, Any]]:
        """The core/v1 Events about one object (by kind, name and uid), oldest first."""
        selector = f"involvedObject.kind={kind},involvedObject.name={name}"
        listing = await self._call("GET", _url("Event", namespace), query=[("fieldSelector", selector)])
        items = [
            e
            for e in listing.get("items") or []
            if (e.get("involvedObject") or {}).get("name") == name
            and (not uid or (e.get("involvedObject") or {}).get("uid") in (None, "", uid))
        ]
        return sorted(items, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))

    async def patch(
        self, kind: str, namespace: str, name: str, patch: Mapping[str, Any], subresource: str | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "PATCH", _url(kind, namespace, name, subresource), patch, content_type=MERGE_PATCH
        )
        return result

    async def release(self, obj: Mapping[str, Any]) -> bool:
        """Remove the operator's finalizer from a Job or Pod; False when it had none or is gone.

        A merge patch of the remaining finalizers with the object's resourceVersion as a precondition, so
        that another controller's finalizer edit in between is never lost (409: read again and retry).
        """
        meta = obj.get("metadata") or {}
        kind = str(obj.get("kind") or ("Job" if "template" in (obj.get("spec") or {}) else "Pod"))
        namespace, name = str(meta["namespace"]), str(meta["name"])
        for _ in range(5):
            finalizers = list(meta.get("finalizers") or [])
            if FINALIZER not in finalizers:
                return False
            patch: dict[str, Any] = {"finalizers": [f for f in finalizers if f != FINALIZER]}
            if meta.get("resourceVersion"):
                patch["resourceVersion"] = meta["resourceVersion"]
            try:
                await self.patch(kind, namespace, name, {"metadata": patch})
                return True
            except NotFound:
                return False
            except Conflict:
                fresh = await self.get(kind, namespace, name)
                if fresh is None:
                    return False
                meta = fresh.get("metadata") or {}
        return False

    async def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete an object (its dependents in the background); False when it was already gone."""
        try:
            await self._call("DELETE", _url(kind, namespace, name), {"propagationPolicy": "Background"})
        except NotFound:
            return False
        return True

    async def delete_job(self, namespace: str, name: str) -> bool:
        return await self.delete("Job", namespace, name)

    async def request(
        self, method: str, path: str, body: Any = None, query: Iterable[tuple[str, str]] = ()
    ) -> dict[str, Any]:
        """Any other API call by path (the leader Lease, cluster-wide lists), retried like the others."""
        content_type = MERGE_PATCH if method == "PATCH" else None
        result: dict[str, Any] = await self._call(method, path, body, content_type=content_type, query=query)
        return result


def _error(status: int, reason: str, message: str, method: str, path: str) -> APIError:
    cls = {404: NotFound, 409: Conflict}.get(status, APIError)
    return cls(status, reason, message, method, path)
