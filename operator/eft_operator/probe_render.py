"""Pure builders of the data probe's ConfigMap and Job (``spec.retrain.onDataChange``, issue 22).

The probe Job is the run's Job made small: the same image, credentials (by reference), run config and
security settings (derived from :func:`eft_operator.render.render_job`, so the two never drift apart), but
``python -m eft_trainer.probe`` as its command, 100m CPU and 256Mi of memory, no GPU, node selector or
queue, no retries, a 10-minute deadline and a short TTL. Its name is deterministic per check slot
(``<name>-probe-<slot>``, the slot being the check time divided by the interval), so a restarted operator
finds the probe it started instead of starting another: at most one probe per interval.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from eft_api import contract
from eft_api.contract import RunConfig, RunIdentity, TrainerSettings
from eft_api.spec import EmbeddingFinetuneSpec
from eft_operator.config import Settings
from eft_operator.render import Owner, render_job

PROBE_COMMAND = ["python", "-m", "eft_trainer.probe"]
PROBE_RESOURCES = {"cpu": "100m", "memory": "256Mi"}
PROBE_DEADLINE_SECONDS = 600
PROBE_TTL_SECONDS = 300


def probe_name(name: str, now: dt.datetime, interval: dt.timedelta) -> str:
    """``<name>-probe-<slot>``: at most 63 characters, one per check interval."""
    slot = int(now.timestamp() // max(1, int(interval.total_seconds())))
    suffix = f"-probe-{slot}"
    return f"{name[: 63 - len(suffix)].rstrip('-.')}{suffix}"


def probe_config(owner: Owner, spec: EmbeddingFinetuneSpec, job: str) -> RunConfig:
    """The run config the probe reads: the spec, and the probe's own identity (its output prefix is unused)."""
    identity = RunIdentity(
        namespace=owner.namespace,
        name=owner.name,
        uid=owner.uid,
        generation=owner.generation,
        run_id=job,
        output_prefix=contract.output_prefix(spec.output.uri, owner.namespace, owner.name, job),
    )
    return RunConfig(run=identity, spec=spec, settings=TrainerSettings(work_dir=contract.WORK_DIR))


def render_probe(
    owner: Owner, spec: EmbeddingFinetuneSpec, settings: Settings, job: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The probe's ConfigMap and Job, named ``job``."""
    full = render_job(owner, spec, settings)
    labels = {**full["metadata"]["labels"], contract.LABEL_RUN: job}
    labels.pop(contract.KUEUE_QUEUE_LABEL, None)
    meta = {**full["metadata"], "name": job, "labels": labels}
    meta.pop("annotations", None)
    meta.pop("finalizers", None)  # nothing to record: the operator reads the probe before it deletes it
    template = full["spec"]["template"]
    pod = dict(template["spec"])
    container = dict(pod["containers"][0])
    container.update(command=PROBE_COMMAND, resources={"requests": PROBE_RESOURCES, "limits": PROBE_RESOURCES})
    container.pop("ports", None)
    pod["containers"] = [container]
    for key in ("nodeSelector", "tolerations", "priorityClassName", "subdomain"):
        pod.pop(key, None)
    pod["volumes"] = [_probe_volume(v, job) for v in pod["volumes"]]
    job_body = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": PROBE_DEADLINE_SECONDS,
            "ttlSecondsAfterFinished": PROBE_TTL_SECONDS,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {k: v for k, v in meta.items() if k in ("name", "namespace", "labels", "ownerReferences")},
        "data": {contract.RUN_CONFIG_KEY: probe_config(owner, spec, job).to_json()},
    }
    return configmap, job_body


def _probe_volume(volume: dict[str, Any], job: str) -> dict[str, Any]:
    if "configMap" in volume:
        return {**volume, "configMap": {**volume["configMap"], "name": job}}
    if "emptyDir" in volume:
        return {**volume, "emptyDir": {"sizeLimit": "256Mi"}}
    return volume
