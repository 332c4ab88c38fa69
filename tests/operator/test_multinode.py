"""Multi-GPU and multi-node runs: the Job's command, and an Indexed Job with its headless Service applied on
the real control plane (envtest: the Job controller creates the indexed pods; no kubelet, so they stay
Pending and the test plays the kubelet)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from controlplane import apply, wait_for

from eft_api import contract
from eft_api.spec import API_GROUP, API_VERSION, KIND, parse_resource
from eft_operator.config import Settings
from eft_operator.render import (
    RENDEZVOUS_PORT,
    Owner,
    render_all,
    render_job,
    render_service,
    service_name,
    trainer_command,
)

PLURAL = "embeddingfinetunes"


def resource(name: str = "multi", **resources: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {
            "model": {"base": "sentence-transformers/all-MiniLM-L6-v2"},
            "data": {"train": {"uri": "s3://bucket/train/", "format": "pairs"}},
            "output": {"uri": "s3://bucket/out/"},
            "resources": {"gpus": 0, **resources},
        },
    }


def owner_of(doc: dict[str, Any], namespace: str = "ns", uid: str = "uid-1") -> tuple[Owner, Any]:
    meta, spec = parse_resource(doc)
    return Owner.of(namespace, meta.resolved_name, uid, 1, spec), spec


def test_one_process_runs_the_trainer_itself() -> None:
    owner, spec = owner_of(resource(gpus=1))
    assert trainer_command(owner, spec) == ["eft-trainer"]
    assert render_service(owner, spec) is None
    job = render_job(owner, spec, Settings())
    assert "completionMode" not in job["spec"] and "subdomain" not in job["spec"]["template"]["spec"]
    assert [c["kind"] for c in render_all(owner, spec, Settings())] == ["ConfigMap", "Job"]


def test_several_gpus_run_torchrun_one_process_per_gpu() -> None:
    owner, spec = owner_of(resource(gpus=4))
    cmd = render_job(owner, spec, Settings())["spec"]["template"]["spec"]["containers"][0]["command"]
    assert cmd == [
        "eft-trainer",
        "torchrun",
        "--nproc_per_node=4",
        "--max_restarts=0",
        "--standalone",
        "--module",
        "eft_trainer",
    ]


def test_several_nodes_are_an_indexed_job_meeting_on_the_pod_of_index_0() -> None:
    owner, spec = owner_of(resource(gpus=8, nodes=4), namespace="team-a")
    job = render_job(owner, spec, Settings())
    js = job["spec"]
    assert (js["completionMode"], js["completions"], js["parallelism"]) == ("Indexed", 4, 4)
    assert js["backoffLimit"] == (spec.run_policy.backoff_limit + 1) * 4 - 1
    pod = js["template"]["spec"]
    assert pod["subdomain"] == service_name(owner)
    cmd = pod["containers"][0]["command"]
    assert "--nnodes=4" in cmd and "--nproc_per_node=8" in cmd and "--rdzv_backend=c10d" in cmd
    host = f"{owner.child_name}-0.{service_name(owner)}.team-a.svc"
    assert f"--rdzv_endpoint={host}:{RENDEZVOUS_PORT}" in cmd
    assert f"--rdzv_id={owner.run_id}" in cmd and "--standalone" not in cmd
    svc = render_service(owner, spec)
    assert svc is not None and svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"]
    labels = js["template"]["metadata"]["labels"]
    assert all(labels[k] == v for k, v in svc["spec"]["selector"].items())
    assert [c["kind"] for c in render_all(owner, spec, Settings())] == ["ConfigMap", "Service", "Job"]


def test_service_name_is_a_dns_label_for_any_resource_name() -> None:
    for name in ("team.v2.run", "1abc", "a" * 63):
        owner, _ = owner_of(resource(name=name, nodes=2))
        svc = service_name(owner)
        assert len(svc) <= 63 and svc[0].isalpha() and all(c.isalnum() or c == "-" for c in svc), svc


# ---------------------------------------------------------------- on the real control plane


def _create(kube: Any, namespace: str, doc: dict[str, Any]) -> dict[str, Any]:
    from kubernetes import client

    created: dict[str, Any] = client.CustomObjectsApi(kube).create_namespaced_custom_object(
        API_GROUP, API_VERSION, namespace, PLURAL, doc
    )
    return created


def _pods(kube: Any, namespace: str, job: str) -> list[Any]:
    from kubernetes import client

    found = client.CoreV1Api(kube).list_namespaced_pod(namespace, label_selector=f"batch.kubernetes.io/job-name={job}")
    return list(found.items)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["multi", "a" * 63])
def test_indexed_job_and_service_on_the_real_control_plane(
    kube: Any, dyn: Any, eft_crd: dict[str, Any], kube_namespace: str, name: str
) -> None:
    """The server accepts the Service and the Indexed Job; the Job controller creates one pod per index with
    the hostname, subdomain and index that torchrun's rendezvous relies on; a bad-input exit code on any
    rank fails the whole Job at once (podFailurePolicy), and the other pods are stopped."""
    from kubernetes import client

    doc = resource(name=name, nodes=3)
    created = _create(kube, kube_namespace, doc)
    owner, spec = owner_of(doc, namespace=kube_namespace, uid=created["metadata"]["uid"])
    children = render_all(owner, spec, Settings())
    for child in children:
        apply(dyn, child)
    job_name = owner.child_name
    svc = client.CoreV1Api(kube).read_namespaced_service(service_name(owner), kube_namespace)
    assert svc.spec.cluster_ip == "None"

    wait_for(lambda: len(_pods(kube, kube_namespace, job_name)) == 3, 30, what="three indexed pods")
    pods = sorted(_pods(kube, kube_namespace, job_name), key=lambda p: int(p.metadata.labels[contract_index()]))
    endpoint = next(a for a in pods[0].spec.containers[0].command if a.startswith("--rdzv_endpoint="))
    for i, pod in enumerate(pods):
        assert pod.metadata.annotations["batch.kubernetes.io/job-completion-index"] == str(i)
        assert pod.spec.hostname == f"{job_name}-{i}"
        assert pod.spec.subdomain == service_name(owner)
        env = {e.name: e for e in pod.spec.containers[0].env}
        assert "JOB_COMPLETION_INDEX" in env
        # The Service selects every pod of the run (so each has a DNS name under it).
        assert all(pod.metadata.labels.get(k) == v for k, v in svc.spec.selector.items())
    host = endpoint.split("=", 1)[1].rsplit(":", 1)[0]
    assert host == f"{pods[0].spec.hostname}.{pods[0].spec.subdomain}.{kube_namespace}.svc"

    # Rank 2 finds bad input: the whole attempt fails at once, without retries.
    core = client.CoreV1Api(kube)
    terminated = {"exitCode": int(contract.ExitCode.BAD_INPUT), "reason": "Error"}
    core.patch_namespaced_pod_status(
        pods[2].metadata.name,
        kube_namespace,
        {
            "status": {
                "phase": "Failed",
                "containerStatuses": [
                    {
                        "name": contract.TRAINER_CONTAINER,
                        "image": "x",
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"terminated": terminated},
                    }
                ],
            }
        },
    )
    batch = client.BatchV1Api(kube)

    def failed() -> bool:
        conds = batch.read_namespaced_job(job_name, kube_namespace).status.conditions or []
        return any(c.type == "Failed" and c.status == "True" for c in conds)

    wait_for(failed, 30, what="the Job to fail on the bad-input exit code")
    conds = {c.type: c for c in batch.read_namespaced_job(job_name, kube_namespace).status.conditions}
    assert conds["Failed"].reason == "PodFailurePolicy"


def contract_index() -> str:
    return "batch.kubernetes.io/job-completion-index"


def test_kueue_sees_one_workload_for_all_pods() -> None:
    """With a queue the Job is created suspended with Kueue's queue label: Kueue admits a Job (all its
    parallelism at once) as one workload, so the pods of a multi-node run start together or not at all."""
    doc = resource(nodes=4)
    doc["spec"]["scheduling"] = {"queueName": "gpus"}
    owner, spec = owner_of(copy.deepcopy(doc))
    job = render_job(owner, spec, Settings())
    assert job["spec"]["suspend"] is True and job["metadata"]["labels"][contract.KUEUE_QUEUE_LABEL] == "gpus"
    assert job["spec"]["parallelism"] == job["spec"]["completions"] == 4
