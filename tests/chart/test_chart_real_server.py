"""The chart's ValidatingAdmissionPolicy on the REAL API server (envtest v1.36, where VAP is GA).

The policy refuses an EmbeddingFinetune whose ``spec.image`` is not among ``trainer.allowedImages`` at
``kubectl apply`` time, and agrees image by image with the operator's own check (``EFT_ALLOWED_IMAGES``),
so that what the API admits the operator runs, and what the operator would refuse never gets in.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from chart_render import by_kind, docs_of, env_of, one, render_files
from controlplane import apply, wait_for

from eft_api.spec import API_GROUP, API_VERSION, KIND
from eft_operator.config import Settings

ALLOWED = ["registry.example.com/ml/", "ghcr.io/eft-dev/eft-trainer"]
IMAGES = [
    ("ghcr.io/eft-dev/eft-trainer:0.2.0", True),
    ("ghcr.io/eft-dev/eft-trainer@sha256:" + "c" * 64, True),
    ("ghcr.io/eft-dev/eft-trainer", True),
    ("registry.example.com/ml/custom-trainer:1", True),
    ("registry.example.com/ml/team/other:2", True),
    ("ghcr.io/eft-dev/eft-trainer-evil:1", False),
    ("ghcr.io/eft-dev/other:1", False),
    ("docker.io/attacker/anything:latest", False),
    ("registry.example.com/mlx/trainer:1", False),
    ("attacker/ghcr.io/eft-dev/eft-trainer:1", False),
]


def _resource(name: str, image: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"base": "sentence-transformers/all-MiniLM-L6-v2"},
        "data": {"train": {"uri": "s3://bucket/pairs.jsonl", "format": "pairs"}},
        "output": {"uri": "s3://bucket/runs/"},
    }
    if image is not None:
        spec["image"] = image
    return {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "metadata": {"name": name}, "spec": spec}


@pytest.fixture
def policy(dyn: Any, eft_crd: Any, kube_namespace: str) -> Iterator[dict[str, Any]]:
    """The chart's policy and binding (namespaced scope: bound to the test's namespace only), removed after."""
    values = {
        "rbac": {"scope": "namespaced"},
        "watchNamespaces": [kube_namespace],
        "trainer": {"allowedImages": ALLOWED},
        "fullnameOverride": f"eft-{uuid.uuid4().hex[:6]}",
    }
    docs = docs_of(render_files(values))
    objs = [
        d
        for d in by_kind(docs, "ValidatingAdmissionPolicy") + by_kind(docs, "ValidatingAdmissionPolicyBinding")
        if d["metadata"]["name"].endswith("-trainer-image")
    ]
    assert len(objs) == 2
    for doc in objs:
        apply(dyn, doc)
    try:
        yield {"env": env_of(one(docs, "Deployment")), "namespace": kube_namespace}
    finally:
        for doc in reversed(objs):
            dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"]).delete(name=doc["metadata"]["name"])


def _admitted(dyn: Any, namespace: str, image: str | None) -> tuple[bool, str]:
    from kubernetes.dynamic.exceptions import ApiException

    try:
        apply(dyn, _resource(f"r-{uuid.uuid4().hex[:8]}", image), namespace=namespace, dry_run=True)
    except ApiException as exc:
        return False, str(exc.body)
    return True, ""


@pytest.mark.slow
def test_the_policy_refuses_images_outside_the_allowlist_as_the_operator_does(
    dyn: Any, kube: Any, policy: dict[str, Any]
) -> None:
    ns = policy["namespace"]
    # A new policy takes effect a moment after it is created: wait until it refuses.
    wait_for(lambda: not _admitted(dyn, ns, "docker.io/attacker/anything:latest")[0], 30, what="the policy active")
    ok, said = _admitted(dyn, ns, "docker.io/attacker/anything:latest")
    assert not ok and "is not among the trainer images this cluster allows" in said
    assert "registry.example.com/ml/" in said
    assert _admitted(dyn, ns, None)[0]  # no spec.image: the operator's default image
    settings = Settings.from_env(policy["env"])
    for image, expected in IMAGES:
        assert _admitted(dyn, ns, image)[0] is expected, image
        assert settings.image_allowed(image) is expected, image
    # The binding covers the watched namespaces only.
    from kubernetes import client

    other = f"t-{uuid.uuid4().hex[:10]}"
    client.CoreV1Api(kube).create_namespace({"metadata": {"name": other}})
    try:
        assert _admitted(dyn, other, "docker.io/attacker/anything:latest")[0]
    finally:
        client.CoreV1Api(kube).delete_namespace(other)


def test_the_default_allowlist_is_the_default_trainer_repository() -> None:
    docs = docs_of(render_files({}))
    env = env_of(one(docs, "Deployment"))
    settings = Settings.from_env(env)
    assert settings.image_allowed("ghcr.io/eft-dev/eft-trainer:9.9.9")
    assert not settings.image_allowed("docker.io/attacker/anything:latest")
    (vap,) = [d for d in by_kind(docs, "ValidatingAdmissionPolicy") if d["metadata"]["name"].endswith("-trainer-image")]
    assert vap["spec"]["variables"][0]["expression"] == '["ghcr.io/eft-dev/eft-trainer"]'
    (binding,) = [
        d for d in by_kind(docs, "ValidatingAdmissionPolicyBinding") if d["metadata"]["name"].endswith("-trainer-image")
    ]
    assert "matchResources" not in binding["spec"]  # cluster scope: every namespace
