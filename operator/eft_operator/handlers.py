"""The kopf handlers: thin. Each one hands a resource to :class:`~eft_operator.reconciler.Reconciler`.

Deletion of a resource needs no handler and so no finalizer on it: the ConfigMap and Job carry owner
references (``controller: true, blockOwnerDeletion: true``) and go with the resource through the garbage
collector, and published models in S3 are deliberately kept. The run's Job and Pods carry the operator's
finalizer (so that a run's outcome is never lost); the child event handler lets them go once the outcome
is recorded or their resource is gone. The only deletion reaction on the resource (dropping its metrics
series and recheck timer) is an ``on.event`` handler, which adds no finalizer.

Handlers are registered into a given :class:`kopf.OperatorRegistry` by :func:`register`, so that tests
and the benchmark run the real handlers in their own registry.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any, cast

import kopf

from eft_api import contract
from eft_api.retrain import RETRAIN_ANNOTATION
from eft_api.spec import API_GROUP, API_VERSION, PLURAL
from eft_operator import children, connection, resync, triggers
from eft_operator.reconciler import ChildConflictError, InvalidSpecError, Reconciler
from eft_operator.resync import RETRY_CEILING, retry_delay

#: Retries without a cap (kopf's ``retries=None``, no ``timeout``): what may pass is retried with a backoff
#: to a ceiling (eft_operator.resync.retry_delay), and the periodic resync catches whatever slips through.
RETRIES = None
TIMEOUT = None
BACKOFF = RETRY_CEILING  # kopf's delay after an exception that is not a kopf error (none expected)
CONFLICT_DELAY = 60.0
CHILD_RETRY_DELAYS = (1.0, 3.0, 10.0)


async def reconcile_resource(
    namespace: str, name: str, memo: kopf.Memo, logger: Any, fresh_body: Any = None, retry: int = 0
) -> None:
    """Create/resume/update: one pass; invalid spec is permanent, everything else retried with backoff.

    Every failure has already been written as a condition and an Event by the reconciler; kopf's own
    log lines about it become Events too (``settings.posting.loggers``).
    """
    reconciler: Reconciler = memo["reconciler"]
    try:
        await reconciler.reconcile(namespace, name, logger=logger, fresh_body=fresh_body, creating=True)
    except InvalidSpecError as exc:
        raise kopf.PermanentError(f"invalid spec: {exc}") from None
    except ChildConflictError as exc:
        raise kopf.TemporaryError(str(exc), delay=CONFLICT_DELAY) from None
    except Exception as exc:
        delay = retry_delay(retry)
        raise kopf.TemporaryError(f"{exc}; retrying in {delay:g} s", delay=delay) from exc


async def on_resource(**kw: Any) -> None:
    """The resource appeared, changed its spec, or the operator (re)started."""
    resync.remember_context(kw["memo"])
    await reconcile_resource(kw["namespace"], kw["name"], kw["memo"], kw["logger"], retry=kw.get("retry", 0))


async def on_resource_created(**kw: Any) -> None:
    """The resource appeared: its first pass uses the body the creation event carried (no write yet)."""
    fresh = kw["body"] if kw.get("retry", 0) == 0 else None
    resync.remember_context(kw["memo"])
    await reconcile_resource(kw["namespace"], kw["name"], kw["memo"], kw["logger"], fresh, kw.get("retry", 0))


def resource_event_wanted(**kw: Any) -> bool:
    """kopf's ``when`` filter of :func:`on_resource_event`: the events it acts on. The others (most of them)
    skip kopf's handler call and its log line."""
    return kw["type"] == "DELETED" or triggers.manual_pending(kw["body"])


async def on_resource_event(**kw: Any) -> None:
    """The resource is gone: drop its lock, metrics series and diffbase. A new value of the retrain annotation (``eft
    retrain NAME``): a pass, which starts the manual run (kopf's own diff ignores annotations of its prefix)."""
    reconciler: Reconciler = kw["memo"]["reconciler"]
    if kw["type"] == "DELETED":
        reconciler.forget(kw["namespace"], kw["name"])
        settings = reconciler.kopf_settings  # set at start-up, with kopf's storages
        if settings is not None and isinstance(diffbase := settings.persistence.diffbase_storage, SpecDiffBase):
            diffbase.forget(str(kw["body"].get("metadata", {}).get("uid")))
    elif triggers.manual_pending(kw["body"]):
        try:
            await reconciler.reconcile(kw["namespace"], kw["name"], logger=kw["logger"], creating=True)
        except Exception as exc:  # the condition says so; the resync or the next event tries again
            kw["logger"].warning(f"Reconciling {kw['namespace']}/{kw['name']} for {RETRAIN_ANNOTATION} failed: {exc}")


async def on_child_event(**kw: Any) -> None:
    """A Job or Pod of a run changed: reconcile its resource (retried a few times on transient errors)."""
    namespace, labels, memo, logger = kw["namespace"], kw["labels"], kw["memo"], kw["logger"]
    owner = labels.get(contract.LABEL_NAME)
    if not owner or labels.get(contract.LABEL_MANAGED_BY) != contract.MANAGED_BY:
        return  # kopf filters by labels too; servers may ignore selectors, so check again here
    reconciler: Reconciler = memo["reconciler"]
    plural = kw["resource"].plural
    news = child_event_has_news(plural, kw["type"], kw["body"])
    if not news and (plural != "pods" or not reconciler.pod_appeared(namespace, owner)):
        return
    for attempt, delay in enumerate((*CHILD_RETRY_DELAYS, None)):
        try:
            await reconciler.reconcile(namespace, owner, logger=logger, child=kw["body"])
            return
        except (InvalidSpecError, ChildConflictError):
            return  # the condition says so; the resource's own handler owns the retries
        except children.APIError as exc:
            if delay is None:
                logger.warning(
                    f"Reconciling {namespace}/{owner} failed {attempt + 1} times ({exc!r}); the resync tries again."
                )
                return
            await _sleep(delay)


def child_event_wanted(**kw: Any) -> bool:
    """kopf's ``when`` filter of :func:`on_child_event`: a child event with news, or a pod that appeared
    (listed or added). Under a burst most Job and Pod events are bookkeeping; filtered here they skip
    kopf's handler call and its log line."""
    plural = kw["resource"].plural
    return child_event_has_news(plural, kw["type"], kw["body"]) or (plural == "pods" and kw["type"] in (None, "ADDED"))


def child_event_has_news(plural: str, event_type: str | None, body: Any) -> bool:
    """Whether a child's watch event can change the resource's status.

    Under a burst most child events are bookkeeping: the Job controller counting a new pod, a pod
    appearing with no status yet. Skipping them halves the API calls per resource on a real server.
    What counts: a child that disappears or is being deleted (the run lost its Job, or the finalizer
    must go); a Job with conditions (finished, failed, suspended or resumed) or a ready pod; a pod that
    runs or ended, waits for a reason other than starting (SecretNotFound, ImagePullFailed), or that the
    scheduler cannot place. A pod appearing matters only to a run waiting for its pods
    (:meth:`Reconciler.pod_appeared`). After a restart, the resume handler reconciles every resource.
    """
    meta = body.get("metadata") or {}
    if event_type == "DELETED" or meta.get("deletionTimestamp"):
        return True
    status = body.get("status") or {}
    if plural == "jobs":
        return bool(status.get("conditions")) or (status.get("ready") or 0) > 0
    if status.get("phase") in ("Running", "Succeeded", "Failed"):
        return True
    for c in status.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False":
            return True
    for cs in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []):
        state = cs.get("state") or {}
        if "running" in state or "terminated" in state or (cs.get("lastState") or {}).get("terminated"):
            return True
        if (state.get("waiting") or {}).get("reason") not in (None, "ContainerCreating", "PodInitializing"):
            return True
    return False


async def _sleep(delay: float) -> None:
    await asyncio.sleep(delay)


async def on_startup(**kw: Any) -> None:
    """Apply kopf settings, connect the API client and start the metrics endpoint.

    The client reaches the API server as ``memo["connection"]`` (a :class:`kopf.ConnectionInfo`) says when
    given (tests), else as :func:`eft_operator.connection.connection_info` finds (``memo["kubeconfig"]``,
    ``$KUBECONFIG``, the in-cluster service account or ``~/.kube/config``), logging in again on a 401.
    """
    memo, settings = kw["memo"], kw["settings"]
    reconciler: Reconciler = memo["reconciler"]
    configure(settings, log_level=reconciler.settings.log_level, clusterwide=reconciler.settings.clusterwide)
    info = memo.get("connection")
    if info is None:
        info = connection.connection_info(memo.get("kubeconfig"), settings)
        reconciler.connect(children.Client(info, relogin=lambda: connection.connection_info(settings=settings)))
    else:
        reconciler.connect(children.Client(info))
    reconciler.kopf_settings = settings
    port = memo.get("metrics_port", reconciler.settings.metrics_port)  # None in memo: no endpoint
    if port is not None:
        memo["metrics_runner"] = await reconciler.metrics.start_server(memo.get("metrics_host", "0.0.0.0"), port)


async def on_cleanup(**kw: Any) -> None:
    runner = kw["memo"].get("metrics_runner")
    if runner is not None:
        await runner.cleanup()
    reconciler: Reconciler = kw["memo"]["reconciler"]
    await reconciler.close()


def register(registry: kopf.OperatorRegistry) -> kopf.OperatorRegistry:
    """Register every handler of the operator into ``registry``."""
    resource = (API_GROUP, API_VERSION, PLURAL)
    kopf.on.startup(id="configure", registry=registry)(on_startup)
    kopf.on.cleanup(id="metrics", registry=registry)(on_cleanup)
    kopf.on.startup(id="resync", registry=registry)(resync.on_startup)
    kopf.on.cleanup(id="resync", registry=registry)(resync.on_cleanup)
    options: dict[str, Any] = {"registry": registry, "retries": RETRIES, "backoff": BACKOFF, "timeout": TIMEOUT}
    kopf.on.create(*resource, id="reconcile", **options)(on_resource_created)
    kopf.on.resume(*resource, id="reconcile", **options)(on_resource)
    kopf.on.update(*resource, id="reconcile", field="spec", **options)(on_resource)
    kopf.on.event(*resource, id="forget", when=resource_event_wanted, registry=registry)(on_resource_event)
    child_labels: dict[str, Any] = {
        contract.LABEL_MANAGED_BY: contract.MANAGED_BY,
        contract.LABEL_NAME: kopf.PRESENT,
    }
    child: dict[str, Any] = {"labels": child_labels, "when": child_event_wanted, "registry": registry}
    kopf.on.event("batch", "v1", "jobs", id="job", **child)(on_child_event)
    kopf.on.event("", "v1", "pods", id="pod", **child)(on_child_event)
    return registry


class SpecDiffBase(kopf.DiffBaseStorage):
    """kopf's diffbase (the last handled essence: spec, labels, annotations), kept in memory by uid.

    kopf's annotation storage patches every resource once more after its handler ran, and that patch comes
    back as one more watch event to process: a third of the operator's work for a new resource under a
    burst (bench/bench_operator_burst.py). Kept in memory instead, a resource this process has not handled
    yet (the operator restarted, or another replica took over) has no diffbase, and kopf calls the create
    handler for it, which is the same idempotent pass as resume: each pass decides from the resource's
    generation and status what to do, never from the diffbase. Spec changes while this process runs are
    updates, as before.

    The essence is built from what it keeps: kopf's own ``build`` deep-copies the whole body first, status
    and managedFields included, on every event of every resource (the largest single cost in the burst's
    profile). The operator's own annotations (its prefix: the retrain request) are left out, as kopf does
    for the prefix of its storages.
    """

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self._last: dict[str, kopf.BodyEssence] = {}

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        # kopf passes the fields of field-bound handlers: ``spec`` (the update handler), kept whole below
        if not _kept_whole(extra_fields) or self.ignored_fields:  # beyond what this builds: kopf's own
            return super().build(body=body, extra_fields=extra_fields)
        essence: dict[str, Any] = {key: _tree(value) for key, value in body.items() if key not in _DROPPED}
        meta = body.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        others = {f"{self.prefix}/", *_kopf_prefixes(annotations)}
        kept = {
            "labels": dict(meta.get("labels") or {}),
            "annotations": {
                k: v
                for k, v in annotations.items()
                if not k.startswith(tuple(others)) and k != "kubectl.kubernetes.io/last-applied-configuration"
            },
        }
        if kept := {k: v for k, v in kept.items() if v}:
            essence["metadata"] = kept
        return cast(kopf.BodyEssence, essence)

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return self._last.get(str(body.get("metadata", {}).get("uid")))

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        self._last[str(body.get("metadata", {}).get("uid"))] = essence

    def forget(self, uid: str) -> None:
        self._last.pop(uid, None)

    def handled(self) -> int:
        """How many resources have a diffbase (a method, not ``__len__``: an empty storage stays truthy)."""
        return len(self._last)


#: Top-level fields the essence leaves out (kopf's own build drops them too).
_DROPPED = ("apiVersion", "kind", "metadata", "status")


def _kept_whole(fields: Any) -> bool:
    """Whether every field path (a dotted string or a tuple of keys) lies in a top-level field that
    :meth:`SpecDiffBase.build` copies whole, so that kopf's re-adding it would change nothing."""
    for field in fields or ():
        first = field.split(".", 1)[0] if isinstance(field, str) else (field[0] if field else "")
        if not first or first in _DROPPED:
            return False
    return True


def _kopf_prefixes(annotations: Mapping[str, Any]) -> set[str]:
    """Annotation prefixes (``example.com/``) of kopf-based operators: marked ``kopf-managed``, or kopf's own."""
    prefixes = set()
    for key in annotations:
        prefix, _, name = key.partition("/")
        if name == "kopf-managed" or prefix == "kopf.zalando.org" or prefix.endswith(".kopf.zalando.org"):
            prefixes.add(f"{prefix}/")
    return prefixes


def _tree(value: Any) -> Any:
    """A copy of a tree of JSON values: what ``copy.deepcopy`` makes, several times faster (no memo)."""
    if isinstance(value, dict):
        return {k: _tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_tree(v) for v in value]
    return value


class ProgressAnnotations(kopf.AnnotationsProgressStorage):
    """kopf's progress records (a handler's retries, in annotations), without kopf's ``kopf-managed`` marker.

    kopf adds the marker to the first record it stores on a resource. A handler that succeeds at once has
    its record purged in the same patch, so the marker alone was the patch: one more request, and one more
    watch event to process, for every new resource. The marker tells other kopf operators' diffbases to
    ignore this prefix; :class:`SpecDiffBase` leaves it out by itself. A handler that must retry still
    gets its record (retry count, delay) written and read back as with kopf's own storage.
    """

    def store(self, *, key: Any, record: Any, body: kopf.Body, patch: kopf.Patch) -> None:
        encoded = json.dumps({k: v for k, v in record.items() if self.verbose or v is not None}, separators=(",", ":"))
        annotations = patch.setdefault("metadata", {}).setdefault("annotations", {})
        for full_key in self.make_keys(key, body=body):
            annotations[full_key] = encoded

    def clear(self, *, essence: kopf.BodyEssence) -> kopf.BodyEssence:
        """The essence without this storage's annotations: :class:`SpecDiffBase` builds none into it, so
        kopf's deep copy (on every event, of the old and the new essence) is left out when there are none."""
        annotations = (essence.get("metadata") or {}).get("annotations") or {}
        if any(key.startswith(f"{self.prefix}/") for key in annotations):
            return super().clear(essence=essence)
        return essence


def configure(settings: kopf.OperatorSettings, *, log_level: str = "INFO", clusterwide: bool = True) -> None:
    """kopf settings: no finalizers or status fields of kopf's own, bounded API retries, failures as Events.

    Namespaced (``clusterwide`` False): kopf serves exactly the named namespaces and does not scan the
    cluster's namespaces, which a namespaced operator may not list (it would get 403s and start late).
    """
    prefix = "finetune.eft.dev"
    settings.persistence.progress_storage = ProgressAnnotations(prefix=prefix)
    settings.persistence.diffbase_storage = SpecDiffBase(prefix)
    settings.posting.reporting_component = "eft-operator"
    # kopf posts nothing from its logs unless asked (posting.loggers is False by default): ask, so that a
    # handler's failure ("Handler 'reconcile' failed temporarily: ...") reaches the resource's Events.
    # Only warnings and errors ("Handler ... succeeded" on every watch event would drown the run Events
    # that users read); the run Events are posted explicitly.
    settings.posting.loggers = True
    settings.posting.level = logging.WARNING
    settings.scanning.disabled = not clusterwide
    settings.networking.error_backoffs = resync.Backoffs()  # never give up: 1, 2, 4, 8, 16, then 30 s
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.execution.max_workers = 8
    child_selector = f"{contract.LABEL_MANAGED_BY}={contract.MANAGED_BY}"
    settings.watching.label_selectors["batch/v1/jobs"] = child_selector
    settings.watching.label_selectors["v1/pods"] = child_selector
    logging.getLogger("kopf").setLevel(log_level)
