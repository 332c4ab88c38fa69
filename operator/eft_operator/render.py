"""Pure builders of a run's children: the ConfigMap with the run config and the batch/v1 Job.

The operator and ``eft render`` call the same functions, so what a GitOps review shows is what the
operator creates. No I/O here: plain dicts in, plain dicts out.

The Job follows DESIGN.md's Jobs convention: ``restartPolicy: Never``, a finite ``backoffLimit``,
``activeDeadlineSeconds``, ``ttlSecondsAfterFinished``, a ``podFailurePolicy`` that fails the Job at once on
the trainer's non-retryable exit codes and ignores disruptions, ``podReplacementPolicy: Failed``; pods meet
the "restricted" Pod Security Standard with a read-only root filesystem and no service-account token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from eft_api import contract
from eft_api.retrain import RunTrigger, run_salt
from eft_api.spec import API_GROUP, API_VERSION, KIND, EmbeddingFinetuneSpec
from eft_operator.config import Settings

TRAINER_UID = 10001
TMP_SIZE = "1Gi"
APP_LABEL = "app.kubernetes.io/name"
APP_NAME = "eft-trainer"
#: Annotation on the Job: the hash of the run-defining spec (everything but runPolicy.suspend).
SPEC_HASH_ANNOTATION = f"{API_GROUP}/spec-hash"
#: The operator's finalizer on a run's Job and (through the pod template) its Pods: they, and the trainer's
#: termination message with them, stay until the run's outcome is in status, even if the TTL controller
#: or a person deletes them while the operator is down. The operator removes it once the outcome is recorded.
OUTCOME_FINALIZER = f"{API_GROUP}/record-outcome"
#: Port of torchrun's c10d rendezvous store on the pod of index 0 of a multi-node run.
RENDEZVOUS_PORT = 29400


@dataclass(frozen=True)
class Owner:
    """The EmbeddingFinetune a run belongs to: where it lives, which generation and which spec the run trains."""

    namespace: str
    name: str
    uid: str
    generation: int
    #: :func:`spec_hash` of the spec the run trains (part of the run id).
    digest: str
    #: Pods of the run (``spec.resources.nodes``): an Indexed Job's name leaves room for its pods' hostnames.
    nodes: int = 1
    #: Why the run runs (spec.retrain): its trigger and data digest salt the run id (None: a plain spec change).
    trigger: RunTrigger | None = None

    @classmethod
    def of(
        cls,
        namespace: str,
        name: str,
        uid: str,
        generation: int,
        spec: EmbeddingFinetuneSpec,
        trigger: RunTrigger | None = None,
    ) -> Owner:
        return cls(
            namespace=namespace,
            name=name,
            uid=uid,
            generation=generation,
            digest=spec_hash(spec),
            nodes=spec.resources.nodes,
            trigger=trigger,
        )

    @property
    def run_id(self) -> str:
        return contract.run_id(self.uid, self.generation, self.digest, run_salt(self.trigger))

    @property
    def child_name(self) -> str:
        return contract.child_name(self.name, self.run_id, self.nodes)


#: A hash of what defines a run (the spec less ``runPolicy.suspend``), from the contract.
spec_hash = contract.spec_digest


def queue_name(spec: EmbeddingFinetuneSpec, settings: Settings) -> str | None:
    """The Kueue LocalQueue of the run: the resource's own, else the operator's default, else none."""
    return spec.scheduling.queue_name or settings.default_queue_name


def owner_reference(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_labels(owner: Owner) -> dict[str, str]:
    return {
        APP_LABEL: APP_NAME,
        contract.LABEL_MANAGED_BY: contract.MANAGED_BY,
        contract.LABEL_NAME: owner.name,
        contract.LABEL_RUN: owner.run_id,
        contract.LABEL_GENERATION: str(owner.generation),
    }


def _metadata(owner: Owner, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "name": owner.child_name,
        "namespace": owner.namespace,
        "labels": labels,
        "ownerReferences": [owner_reference(owner)],
    }


def run_config(
    owner: Owner, spec: EmbeddingFinetuneSpec, settings: Settings, reuse: contract.ModelReuse | None = None
) -> contract.RunConfig:
    return contract.build_run_config(
        namespace=owner.namespace,
        name=owner.name,
        uid=owner.uid,
        generation=owner.generation,
        spec=spec,
        settings=contract.TrainerSettings(work_dir=contract.WORK_DIR, metrics_port=settings.trainer_metrics_port),
        reuse_model_from=reuse,
        trigger=owner.trigger,
    )


def render_configmap(
    owner: Owner, spec: EmbeddingFinetuneSpec, settings: Settings, reuse: contract.ModelReuse | None = None
) -> dict[str, Any]:
    """The run's ConfigMap: the run config JSON under ``contract.RUN_CONFIG_KEY`` (never a credential)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(owner, child_labels(owner)),
        "data": {contract.RUN_CONFIG_KEY: run_config(owner, spec, settings, reuse).to_json()},
    }


def _env(spec: EmbeddingFinetuneSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": contract.RUN_CONFIG_ENV, "value": contract.RUN_CONFIG_PATH},
        {"name": "HOME", "value": contract.WORK_DIR},
        {"name": "HF_HOME", "value": f"{contract.WORK_DIR}/hf"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    secret = spec.storage.credentials_secret
    if secret is not None:
        for key in contract.S3_CREDENTIAL_VARS:  # the Secret's keys: the names boto3 reads
            ref: dict[str, Any] = {"name": secret.name, "key": key}
            if key == "AWS_SESSION_TOKEN":
                ref["optional"] = True
            env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    llm = spec.data.generate.generator.llm if spec.data.generate else None
    if llm is not None and llm.api_key_secret is not None:  # by reference: the operator never reads the key
        key_ref = {"name": llm.api_key_secret.name, "key": llm.api_key_secret.key}
        env.append({"name": contract.LLM_API_KEY_ENV, "valueFrom": {"secretKeyRef": key_ref}})
    env += registry_env(spec)
    if llm is not None and llm.prompt_config_map is not None:
        cm_ref = {"name": llm.prompt_config_map.name, "key": llm.prompt_config_map.key}
        env.append({"name": contract.LLM_PROMPT_ENV, "valueFrom": {"configMapKeyRef": cm_ref}})
    for i, baseline in enumerate(spec.evaluation.baselines):
        secret_ref = baseline.endpoint.api_key_secret if baseline.endpoint else None
        if secret_ref is not None:  # by reference, as the llm generator's key
            ref = {"name": secret_ref.name, "key": secret_ref.key}
            env.append({"name": contract.baseline_key_env(i), "valueFrom": {"secretKeyRef": ref}})
    return env


#: The variables spec.output.registry.mlflow.credentialsSecret may hold, each optional (by reference only).
MLFLOW_SECRET_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


def registry_env(spec: EmbeddingFinetuneSpec) -> list[dict[str, Any]]:
    reg = spec.output.registry
    secret = reg.mlflow.credentials_secret if reg is not None else None
    if secret is None:
        return []
    return [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": key, "optional": True}}}
        for key in MLFLOW_SECRET_KEYS
    ]


def _resources(spec: EmbeddingFinetuneSpec) -> dict[str, Any]:
    r = spec.resources
    # The scratch volume's size is reserved on the node (the platform bounds it: policy.maxWorkDirSize).
    requests = {"cpu": str(r.cpu), "memory": str(r.memory), "ephemeral-storage": str(r.work_dir_size)}
    limits: dict[str, str] = {"cpu": str(r.cpu), "memory": str(r.memory)}
    if r.gpus > 0:
        limits[r.gpu_resource_name] = str(r.gpus)
    return {"requests": requests, "limits": limits}


def _tolerations(spec: EmbeddingFinetuneSpec) -> list[dict[str, Any]]:
    return [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in spec.scheduling.tolerations]


def _restricted() -> dict[str, Any]:
    """The "restricted" Pod Security Standard for the trainer container, plus a read-only root filesystem."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": TRAINER_UID,
        "runAsGroup": TRAINER_UID,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _ports(spec: EmbeddingFinetuneSpec, settings: Settings) -> list[dict[str, Any]]:
    ports = [{"name": "metrics", "containerPort": settings.trainer_metrics_port, "protocol": "TCP"}]
    if multi_node(spec):
        ports.append({"name": "rendezvous", "containerPort": RENDEZVOUS_PORT, "protocol": "TCP"})
    return ports


def _container(owner: Owner, spec: EmbeddingFinetuneSpec, settings: Settings) -> dict[str, Any]:
    """The trainer container: its command, env (credentials by reference), ports, resources and mounts."""
    return {
        "name": contract.TRAINER_CONTAINER,
        "image": spec.image or settings.trainer_image,
        "imagePullPolicy": "IfNotPresent",
        "command": trainer_command(owner, spec),
        "env": _env(spec),
        "ports": _ports(spec, settings),
        "resources": _resources(spec),
        "securityContext": _restricted(),
        "terminationMessagePath": contract.TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "volumeMounts": [
            {"name": "run-config", "mountPath": contract.RUN_CONFIG_DIR, "readOnly": True},
            {"name": "work", "mountPath": contract.WORK_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def _volumes(owner: Owner, spec: EmbeddingFinetuneSpec) -> list[dict[str, Any]]:
    items = [{"key": contract.RUN_CONFIG_KEY, "path": contract.RUN_CONFIG_KEY}]
    return [
        {"name": "run-config", "configMap": {"name": owner.child_name, "items": items}},
        {"name": "work", "emptyDir": {"sizeLimit": str(spec.resources.work_dir_size)}},
        {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE}},
    ]


def _pod_spec(owner: Owner, spec: EmbeddingFinetuneSpec, settings: Settings) -> dict[str, Any]:
    """The pod template's spec: no token, no service links, the restricted pod context, scheduling."""
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": TRAINER_UID,
            "runAsGroup": TRAINER_UID,
            "fsGroup": TRAINER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(owner, spec, settings)],
        "volumes": _volumes(owner, spec),
    }
    if settings.trainer_service_account:
        pod_spec["serviceAccountName"] = settings.trainer_service_account
    if spec.scheduling.node_selector:
        pod_spec["nodeSelector"] = dict(spec.scheduling.node_selector)
    if spec.scheduling.tolerations:
        pod_spec["tolerations"] = _tolerations(spec)
    if spec.scheduling.priority_class_name:
        pod_spec["priorityClassName"] = spec.scheduling.priority_class_name
    if multi_node(spec):
        pod_spec["subdomain"] = service_name(owner)
    return pod_spec


def _pod_failure_policy() -> dict[str, Any]:
    """Fail the Job at once on the trainer's non-retryable exit codes; do not count disruptions."""
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": contract.TRAINER_CONTAINER,
                    "operator": "In",
                    "values": sorted(int(c) for c in contract.NON_RETRYABLE_EXIT_CODES),
                },
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]
    }


def _job_metadata(owner: Owner, spec: EmbeddingFinetuneSpec, queue: str | None) -> dict[str, Any]:
    job_labels = child_labels(owner)
    if queue:
        job_labels[contract.KUEUE_QUEUE_LABEL] = queue
    meta = _metadata(owner, job_labels)
    meta["annotations"] = {SPEC_HASH_ANNOTATION: spec_hash(spec)}
    meta["finalizers"] = [OUTCOME_FINALIZER]
    return meta


def render_job(owner: Owner, spec: EmbeddingFinetuneSpec, settings: Settings) -> dict[str, Any]:
    """The run's Job (see the module docstring for the conventions it follows)."""
    queue = queue_name(spec, settings)
    policy = spec.run_policy
    nodes = spec.resources.nodes
    # One pod per node, all at once; Kueue admits a Job's pods together (all or nothing).
    gang = {"completionMode": "Indexed", "completions": nodes, "parallelism": nodes} if nodes > 1 else {}
    template = {"metadata": {"labels": child_labels(owner), "finalizers": [OUTCOME_FINALIZER]}}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _job_metadata(owner, spec, queue),
        "spec": {
            "suspend": bool(policy.suspend or queue),
            **gang,
            # A failed rank fails every pod of the attempt (torchrun stops the group): the pod failures of one
            # attempt are counted as one retry.
            "backoffLimit": (policy.backoff_limit + 1) * nodes - 1,
            "activeDeadlineSeconds": policy.active_deadline_seconds,
            "ttlSecondsAfterFinished": policy.ttl_seconds_after_finished,
            "podReplacementPolicy": "Failed",
            "podFailurePolicy": _pod_failure_policy(),
            "template": {**template, "spec": _pod_spec(owner, spec, settings)},
        },
    }


def multi_node(spec: EmbeddingFinetuneSpec) -> bool:
    return spec.resources.nodes > 1


def processes_per_node(spec: EmbeddingFinetuneSpec) -> int:
    """One process per GPU; one on CPU."""
    return max(1, spec.resources.gpus)


def service_name(owner: Owner) -> str:
    """The headless Service of a multi-node run (the pods' subdomain): the child name as a DNS-1035 label."""
    name = re.sub(r"[^a-z0-9-]", "-", owner.child_name)
    if not name[:1].isalpha():
        name = "r" + name
    return name[:63].rstrip("-")


def rendezvous_host(owner: Owner) -> str:
    """The DNS name of the pod of index 0: its hostname (``<job name>-0``, set by the Job controller for
    Indexed Jobs) under the run's headless Service."""
    return f"{owner.child_name}-0.{service_name(owner)}.{owner.namespace}.svc"


def trainer_command(owner: Owner, spec: EmbeddingFinetuneSpec) -> list[str]:
    """The container's command: the trainer itself for one process, else the trainer under torchrun.

    ``eft-trainer torchrun ...`` runs torchrun and exits with the trainer's own exit code (torchrun exits 1
    on any failure, which would hide bad input from the podFailurePolicy): ``eft_trainer.launch``. Retries
    are the Job's (``--max_restarts=0``); a pod resumes from the last mirrored checkpoint.
    """
    procs, nodes = processes_per_node(spec), spec.resources.nodes
    if procs == 1 and nodes == 1:
        return ["eft-trainer"]
    cmd = ["eft-trainer", "torchrun", f"--nproc_per_node={procs}", "--max_restarts=0"]
    if nodes == 1:
        cmd.append("--standalone")
    else:
        cmd += [
            f"--nnodes={nodes}",
            "--rdzv_backend=c10d",
            f"--rdzv_endpoint={rendezvous_host(owner)}:{RENDEZVOUS_PORT}",
            f"--rdzv_id={owner.run_id}",
        ]
    return [*cmd, "--module", "eft_trainer"]


def render_service(owner: Owner, spec: EmbeddingFinetuneSpec) -> dict[str, Any] | None:
    """The headless Service through which the pods of a multi-node run find the pod of index 0 (None for one
    pod). ``publishNotReadyAddresses``: the pods rendezvous before any readiness could be reported."""
    if not multi_node(spec):
        return None
    meta = _metadata(owner, child_labels(owner))
    meta["name"] = service_name(owner)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {APP_LABEL: APP_NAME, contract.LABEL_RUN: owner.run_id},
            "ports": [
                {"name": "rendezvous", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT, "protocol": "TCP"}
            ],
        },
    }


def render_network_policy(owner: Owner, spec: EmbeddingFinetuneSpec, settings: Settings) -> dict[str, Any] | None:
    """Ingress between the pods of one multi-node run (rendezvous and collectives), none from other runs.

    Only where the chart's trainer NetworkPolicy is on (EFT_NETWORK_POLICY): that one lets the operator and
    Prometheus reach the metrics port and nothing else in; this one adds the run's own pods, so a pod of
    another run (or another tenant) never reaches the rendezvous port. None for one pod.
    """
    if not multi_node(spec) or not settings.network_policy:
        return None
    meta = _metadata(owner, child_labels(owner))
    meta["name"] = service_name(owner)
    run = {APP_LABEL: APP_NAME, contract.LABEL_RUN: owner.run_id}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta,
        "spec": {
            "podSelector": {"matchLabels": run},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": run}}]}],
        },
    }


def render_all(owner: Owner, spec: EmbeddingFinetuneSpec, settings: Settings) -> list[dict[str, Any]]:
    """Every child of the run: the ConfigMap, the Service (and NetworkPolicy) of a multi-node run, the Job."""
    extra = [c for c in (render_service(owner, spec), render_network_policy(owner, spec, settings)) if c]
    return [render_configmap(owner, spec, settings), *extra, render_job(owner, spec, settings)]


def render_children(
    owner: Owner, spec: EmbeddingFinetuneSpec, settings: Settings, reuse: contract.ModelReuse | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ConfigMap and the Job of the run that trains ``owner.generation`` (or re-gates ``reuse``'s model)."""
    return render_configmap(owner, spec, settings, reuse), render_job(owner, spec, settings)
