"""Shared fixtures: a real S3 server (SeaweedFS on loopback) and a real Kubernetes control plane (envtest).

``control_plane`` starts etcd, kube-apiserver and kube-controller-manager from ``$KUBEBUILDER_ASSETS``
(``make envtest``) once per session; ``kube`` is an API client for it (admin), ``dyn`` a dynamic client,
``eft_crd`` installs ``crds/`` server-side, and ``kube_namespace`` gives each test a fresh namespace.
Without the binaries these tests skip, saying how to get them, except under ``CI=true``, where that
fails. The kmock fixtures (fault injection with the real kopf loop) live in ``tests/operator/``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from controlplane import HOW_TO_GET, ControlPlane, apply, assets_dir, wait_for

from eft_devtools.local_s3 import LocalS3

REPO = Path(__file__).resolve().parents[1]

#: Fixtures that start a server (SeaweedFS, the control plane) or hand a test MiniLM to load: a test that uses
#: one, even through another fixture, must be marked slow, so that ``-m "not slow"`` starts nothing.
SLOW_FIXTURES = frozenset({"s3_server", "control_plane", "model_dir"})


def slow_fixtures_used(item: pytest.Item) -> list[str]:
    """The server-starting fixtures a test uses without the ``slow`` mark (none for a slow test)."""
    if item.get_closest_marker("slow") is not None:
        return []
    return sorted(SLOW_FIXTURES & set(getattr(item, "fixturenames", ())))


def pytest_runtest_setup(item: pytest.Item) -> None:
    used = slow_fixtures_used(item)
    if used:
        pytest.fail(
            f"{item.nodeid} uses {', '.join(used)} (a server or MiniLM) but is not marked slow: "
            "add @pytest.mark.slow (make test-fast must start nothing)",
            pytrace=False,
        )


def _refuse_to_start(self: Any, *args: Any, **kwargs: Any) -> None:
    raise RuntimeError(
        f"a test not marked slow started {type(self).__name__}: add @pytest.mark.slow (make test-fast starts nothing)"
    )


@pytest.fixture(autouse=True)
def _no_server_unless_slow(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test without the ``slow`` mark that starts SeaweedFS or a control plane itself fails loudly."""
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setattr(LocalS3, "start", _refuse_to_start)
        monkeypatch.setattr(ControlPlane, "start", _refuse_to_start)


# Never reach a model hub from tests: models come from the packaged MiniLM or from S3.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    """A SeaweedFS S3 server on 127.0.0.1 for the test session (free ports, so sessions run side by side;
    EFT_TEST_S3_PORT fixes the S3 port), stopped by pid at the end."""
    server = LocalS3(tmp_path_factory.mktemp("seaweedfs"), port=int(os.environ.get("EFT_TEST_S3_PORT", "0")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: LocalS3) -> str:
    """A fresh, empty bucket on the session's S3 server."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(name)
    return name


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A real control plane (v1.36 here) on free loopback ports for the session, stopped by pid at the end."""
    assets = assets_dir()
    if assets is None:
        message = f"no Kubernetes control-plane binaries (KUBEBUILDER_ASSETS): {HOW_TO_GET}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    plane = ControlPlane(assets, tmp_path_factory.mktemp("envtest"))
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def kube(control_plane: ControlPlane) -> Iterator[Any]:
    """An API client of the control plane, as its admin (system:masters)."""
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def dyn(kube: Any) -> Any:
    from kubernetes import dynamic

    return dynamic.DynamicClient(kube)


@pytest.fixture(scope="session")
def eft_crd(kube: Any, dyn: Any) -> dict[str, Any]:
    """crds/ installed server-side and Established; returns the CRD as the server stores it."""
    from kubernetes import client

    doc = yaml.safe_load((REPO / "crds" / "embeddingfinetunes.yaml").read_text(encoding="utf-8"))
    apply(dyn, doc)
    api = client.ApiextensionsV1Api(kube)
    name = doc["metadata"]["name"]

    def established() -> bool:
        conditions = api.read_custom_resource_definition(name).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    wait_for(established, 30, what=f"CRD {name} to be Established")
    stored: dict[str, Any] = kube.sanitize_for_serialization(api.read_custom_resource_definition(name))
    return stored


@pytest.fixture
def kube_namespace(kube: Any) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (the garbage collector removes what was in it)."""
    from kubernetes import client

    core = client.CoreV1Api(kube)
    name = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        core.delete_namespace(name)
