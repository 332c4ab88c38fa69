"""The kopf handlers: thin. Each one hands a resource to :class:`~eft_operator.reconciler.Reconciler`.

Deletion needs no handler and so no finalizer: the ConfigMap and Job carry owner references
(``controller: true, blockOwnerDeletion: true``) and go with the resource through the garbage collector;
nothing else needs cleaning up, and published models in S3 are deliberately kept. The only deletion
reaction (dropping the resource's metrics series) is an ``on.event`` handler, which adds no finalizer.

Handlers are registered into a given :class:`kopf.OperatorRegistry` by :func:`register`, so that tests
and the benchmark run the real handlers in their own registry.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
from kopf._cogs.clients import errors as api_errors

from eft_api import contract
from eft_api.spec import API_GROUP, API_VERSION, PLURAL
from eft_operator.reconciler import ChildConflictError, InvalidSpecError, Reconciler

#: Bounded retries for the resource handlers: transient trouble is retried, nothing forever.
RETRIES = 8
BACKOFF = 5.0
TIMEOUT = 30 * 60.0
TRANSIENT_DELAY = 10.0
CONFLICT_DELAY = 60.0
CHILD_RETRY_DELAYS = (1.0, 3.0, 10.0)

_TRANSIENT = (api_errors.APIServerError, api_errors.APITooManyRequestsError, api_errors.APIConflictError, TimeoutError)


async def reconcile_resource(
    namespace: str, name: str, memo: kopf.Memo, settings: Any, logger: Any, fresh_body: Any = None
) -> None:
    """Create/resume/update: one pass; invalid spec is permanent, API trouble temporary (bounded)."""
    reconciler: Reconciler = memo["reconciler"]
    try:
        await reconciler.reconcile(namespace, name, kopf_settings=settings, logger=logger, fresh_body=fresh_body)
    except InvalidSpecError as exc:
        raise kopf.PermanentError(f"invalid spec: {exc}") from None
    except ChildConflictError as exc:
        raise kopf.TemporaryError(str(exc), delay=CONFLICT_DELAY) from None
    except _TRANSIENT as exc:
        raise kopf.TemporaryError(f"the API failed ({type(exc).__name__}); retrying", delay=TRANSIENT_DELAY) from exc
    except api_errors.APIError as exc:
        raise kopf.TemporaryError(f"the API refused a request: {exc}", delay=TRANSIENT_DELAY) from exc


async def on_resource(**kw: Any) -> None:
    """The resource appeared, changed its spec, or the operator (re)started."""
    memo = kw["memo"]
    await reconcile_resource(kw["namespace"], kw["name"], memo, memo["kopf_settings"], kw["logger"])


async def on_resource_created(**kw: Any) -> None:
    """The resource appeared: its first pass uses the body the creation event carried (no write yet)."""
    memo = kw["memo"]
    fresh = kw["body"] if kw.get("retry", 0) == 0 else None
    await reconcile_resource(kw["namespace"], kw["name"], memo, memo["kopf_settings"], kw["logger"], fresh)


async def on_resource_event(**kw: Any) -> None:
    """The resource is gone: drop its lock and metrics series."""
    if kw["type"] == "DELETED":
        reconciler: Reconciler = kw["memo"]["reconciler"]
        reconciler.forget(kw["namespace"], kw["name"])


async def on_child_event(**kw: Any) -> None:
    """A Job or Pod of a run changed: reconcile its resource (retried a few times on transient errors)."""
    namespace, labels, memo, logger = kw["namespace"], kw["labels"], kw["memo"], kw["logger"]
    settings = memo["kopf_settings"]
    owner = labels.get(contract.LABEL_NAME)
    if not owner or labels.get(contract.LABEL_MANAGED_BY) != contract.MANAGED_BY:
        return  # kopf filters by labels too; servers may ignore selectors, so check again here
    if not child_event_has_news(kw["resource"].plural, kw["type"], kw["body"]):
        return
    reconciler: Reconciler = memo["reconciler"]
    for attempt, delay in enumerate((*CHILD_RETRY_DELAYS, None)):
        try:
            await reconciler.reconcile(namespace, owner, kopf_settings=settings, logger=logger)
            return
        except (InvalidSpecError, ChildConflictError):
            return  # the condition says so; the resource's own handler owns the retries
        except (*_TRANSIENT, api_errors.APIError) as exc:
            if delay is None:
                logger.warning(f"Gave up reconciling {namespace}/{owner} after {attempt + 1} tries: {exc!r}")
                return
            await _sleep(delay)


def child_event_has_news(plural: str, event_type: str | None, body: Any) -> bool:
    """Whether a child's watch event can change the resource's status.

    A Job with no status yet (just created by the pass that already recorded it, or only suspended or
    resumed by us) tells nothing new; skipping it halves the API calls of a burst of creates. A Job that
    disappears always counts (the run lost its Job), and Pods always count (their container states carry
    Running, OOMKilled, SecretNotFound). After a restart, the resume handler reconciles every resource.
    """
    if event_type == "DELETED" or plural != "jobs":
        return True
    return bool(body.get("status"))


async def _sleep(delay: float) -> None:
    import asyncio

    await asyncio.sleep(delay)


async def on_startup(**kw: Any) -> None:
    """Apply kopf settings and start the metrics endpoint (``memo["metrics_host"]``, settings' port)."""
    memo, settings = kw["memo"], kw["settings"]
    reconciler: Reconciler = memo["reconciler"]
    configure(settings, log_level=reconciler.settings.log_level)
    memo["kopf_settings"] = settings  # resource handlers get no settings kwarg; the API client needs them
    port = memo.get("metrics_port", reconciler.settings.metrics_port)  # None in memo: no endpoint
    if port is not None:
        memo["metrics_runner"] = await reconciler.metrics.start_server(memo.get("metrics_host", "0.0.0.0"), port)


async def on_cleanup(**kw: Any) -> None:
    runner = kw["memo"].get("metrics_runner")
    if runner is not None:
        await runner.cleanup()


def register(registry: kopf.OperatorRegistry) -> kopf.OperatorRegistry:
    """Register every handler of the operator into ``registry``."""
    resource = (API_GROUP, API_VERSION, PLURAL)
    kopf.on.startup(id="configure", registry=registry)(on_startup)
    kopf.on.cleanup(id="metrics", registry=registry)(on_cleanup)
    options: dict[str, Any] = {"registry": registry, "retries": RETRIES, "backoff": BACKOFF, "timeout": TIMEOUT}
    kopf.on.create(*resource, id="reconcile", **options)(on_resource_created)
    kopf.on.resume(*resource, id="reconcile", **options)(on_resource)
    kopf.on.update(*resource, id="reconcile", field="spec", **options)(on_resource)
    kopf.on.event(*resource, id="forget", registry=registry)(on_resource_event)
    child_labels: dict[str, Any] = {
        contract.LABEL_MANAGED_BY: contract.MANAGED_BY,
        contract.LABEL_NAME: kopf.PRESENT,
    }
    kopf.on.event("batch", "v1", "jobs", id="job", labels=child_labels, registry=registry)(on_child_event)
    kopf.on.event("", "v1", "pods", id="pod", labels=child_labels, registry=registry)(on_child_event)
    return registry


def configure(settings: kopf.OperatorSettings, *, log_level: str = "INFO") -> None:
    """kopf settings: no finalizers or status fields of kopf's own, bounded API retries, quiet posting."""
    prefix = "finetune.eft.dev"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=prefix, key="last-handled-spec")
    settings.posting.reporting_component = "eft-operator"
    # Only warnings and errors of kopf's own logs become Events ("Handler ... succeeded" on every watch
    # event would drown the run Events that users read); the run Events are posted explicitly.
    settings.posting.level = logging.WARNING
    settings.networking.error_backoffs = (1, 2, 4, 8)
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.execution.max_workers = 8
    child_selector = f"{contract.LABEL_MANAGED_BY}={contract.MANAGED_BY}"
    settings.watching.label_selectors["batch/v1/jobs"] = child_selector
    settings.watching.label_selectors["v1/pods"] = child_selector
    logging.getLogger("kopf").setLevel(log_level)
