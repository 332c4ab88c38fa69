"""Register a published run in a model registry (``spec.output.registry.mlflow``, issue 22).

After publication the trainer (which holds the credentials, from ``credentialsSecret`` as the
``MLFLOW_TRACKING_*`` variables) makes the run's model a new version of the registered model:

* source: the run's published ``model/`` folder (a rejected run, registered with ``registerRejected``, has
  no model folder: its source is the run's prefix with the report);
* tags (``eft.*``): run id, namespace and name, base model, data digest, trigger, primary metric with base,
  fine-tuned, gain and its 95% interval, ``reindexRequired``, embedding dimension and the promotion verdict;
* the alias (``champion`` by default) moves to the version only when the promotion gate passed.

Idempotent: a retried attempt (or a rerun of an already published run) finds its version by the
``eft.runId`` tag and only makes sure of the alias. A failure is :class:`RegistryFailed` (retryable: the
publication stays, the next attempt registers).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from eft_api.contract import PUBLISHED_REPORT_JSON, Reason, RegistryInfo, RunConfig, TerminationMessage
from eft_api.retrain import MlflowRegistry
from eft_trainer.errors import TrainerError
from eft_trainer.storage import S3Uri, Store

log = logging.getLogger(__name__)

RUN_ID_TAG = "eft.runId"


class RegistryFailed(TrainerError):
    reason = Reason.REGISTRY_FAILED


@dataclass(frozen=True)
class Facts:
    """What a registered version says about its run."""

    run_id: str
    source: str
    passed: bool
    tags: dict[str, str]


def facts(cfg: RunConfig, msg: TerminationMessage, report: dict[str, Any] | None) -> Facts:
    """The version's source and tags, from the run config, the termination message and the report (if read)."""
    passed = msg.outcome == "Succeeded"
    arts = msg.artifacts
    source = arts.model if arts is not None and arts.model else cfg.run.output_prefix
    tags = {
        RUN_ID_TAG: cfg.run.run_id,
        "eft.namespace": cfg.run.namespace,
        "eft.name": cfg.run.name,
        "eft.generation": str(cfg.run.generation),
        "eft.baseModel": cfg.spec.model.base,
        "eft.dataDigest": cfg.run.data_digest or "",
        "eft.trigger": cfg.run.trigger or "specChange",
        "eft.promotion": "passed" if passed else "rejected",
    }
    if msg.headline is not None:
        h = msg.headline
        tags.update(
            {
                "eft.primaryMetric": h.primary_metric,
                "eft.base": f"{h.base:.6f}",
                "eft.finetuned": f"{h.finetuned:.6f}",
                "eft.gain": f"{h.gain:.6f}",
                "eft.dimension": str(h.dimension),
            }
        )
    boot = ((report or {}).get("headline") or {}).get("bootstrap") or {}
    if "low" in boot and "high" in boot:
        tags.update({"eft.gainCiLow": f"{boot['low']:.6f}", "eft.gainCiHigh": f"{boot['high']:.6f}"})
    if msg.index is not None:
        tags.update(
            {"eft.reindexRequired": str(msg.index.reindex_required).lower(), "eft.dimension": str(msg.index.dimension)}
        )
    return Facts(cfg.run.run_id, source, passed, {k: v for k, v in tags.items() if v})


def register(client: Any, reg: MlflowRegistry, f: Facts) -> RegistryInfo:
    """Make ``f`` a version of ``reg.model_name`` (or find the one an earlier attempt made); move the alias if passed."""
    _ensure_model(client, reg.model_name)
    version = _find_version(client, reg.model_name, f.run_id)
    if version is None:
        created = client.create_model_version(
            name=reg.model_name,
            source=f.source,
            tags=f.tags,
            description=f"EmbeddingFinetune run {f.run_id} ({f.tags.get('eft.promotion')})",
        )
        version = str(created.version)
        log.info("registered run %s as version %s of %s", f.run_id, version, reg.model_name)
    else:
        log.info("run %s is already version %s of %s", f.run_id, version, reg.model_name)
    if f.passed:
        client.set_registered_model_alias(reg.model_name, reg.alias, version)
    return RegistryInfo(model_name=reg.model_name, version=version, alias=reg.alias if f.passed else None)


def _ensure_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        try:
            client.create_registered_model(name, description="Fine-tuned embedding models (EmbeddingFinetune)")
        except MlflowException as again:  # another attempt made it meanwhile
            if again.error_code != "RESOURCE_ALREADY_EXISTS":
                raise


def _find_version(client: Any, name: str, run_id: str) -> str | None:
    quoted = name.replace("'", "\\'")
    found = client.search_model_versions(f"name='{quoted}' and tags.`{RUN_ID_TAG}` = '{run_id}'")
    versions = sorted(int(v.version) for v in found if (v.tags or {}).get(RUN_ID_TAG) == run_id)
    return str(versions[0]) if versions else None


def wanted(cfg: RunConfig, msg: TerminationMessage) -> bool:
    """Whether this run's outcome is registered: a success, or a rejection when ``registerRejected``."""
    reg = cfg.spec.output.registry
    if reg is None:
        return False
    if msg.outcome == "Succeeded":
        return True
    return msg.reason == Reason.PROMOTION_REJECTED and reg.mlflow.register_rejected


def after_publish(cfg: RunConfig, msg: TerminationMessage, storage: Store) -> TerminationMessage:
    """Register the run if the spec asks; the message with the registered version (or raise RegistryFailed).

    ``storage`` serves the published report.json, for the gain's interval."""
    if not wanted(cfg, msg):
        return msg
    report = read_report(storage, cfg)
    reg = cfg.spec.output.registry
    assert reg is not None
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=reg.mlflow.tracking_uri, registry_uri=reg.mlflow.tracking_uri)
    try:
        info = register(client, reg.mlflow, facts(cfg, msg, report))
    except Exception as exc:  # unreachable, refused, a server error: the next attempt registers again
        raise RegistryFailed(
            f"registering run {cfg.run.run_id} as a version of {reg.mlflow.model_name} at "
            f"{reg.mlflow.tracking_uri} failed: {type(exc).__name__}: {str(exc)[:300]}"
        ) from None
    return msg.model_copy(update={"registry": info})


def read_report(storage: Store, cfg: RunConfig) -> dict[str, Any] | None:
    """The published report.json (for the gain's interval); None when it cannot be read."""
    try:
        data = json.loads(storage.get_bytes(S3Uri.parse(cfg.run.output_prefix).join(PUBLISHED_REPORT_JSON)))
    except Exception:
        return None
    return data if isinstance(data, dict) else None
