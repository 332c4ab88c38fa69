"""How the operator logs in (eft_operator.connection) and what its kopf settings keep: pure, no server.

The real login (a kubeconfig with a client certificate, against kube-apiserver) is exercised by every
operator test on the real control plane (tests/operator/operator_process.py runs ``eft-operator``).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from eft_operator import connection
from eft_operator.handlers import SpecDiffBase


def write_kubeconfig(path: Path, user: dict[str, Any], server: str = "https://127.0.0.1:6443") -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u", "namespace": "team-a"}}],
                "clusters": [{"name": "k", "cluster": {"server": server, "insecure-skip-tls-verify": False}}],
                "users": [{"name": "u", "user": user}],
            }
        )
    )
    return path


def test_a_kubeconfig_with_a_token_gives_its_server_and_bearer_header(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    path = write_kubeconfig(tmp_path / "config", {"token": "s3cr3t"})
    info = connection.connection_info(str(path))
    assert info.server == "https://127.0.0.1:6443"
    assert info.as_http_headers() == {"Authorization": "Bearer s3cr3t"}
    assert info.default_namespace == "team-a"


def test_an_exec_plugin_user_without_the_kubernetes_package_is_refused_saying_what_to_install(
    tmp_path: Path, monkeypatch: Any
) -> None:
    path = write_kubeconfig(tmp_path / "config", {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "x"}})
    monkeypatch.setitem(sys.modules, "kubernetes", None)  # as in the operator image, which does not install it
    with pytest.raises(connection.LoginError, match=r"exec plugin.*\[cli\]"):
        connection.connection_info(str(path))


def test_no_kubeconfig_and_no_service_account_says_what_was_tried(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(connection.LoginError, match=r"service account token.*kubeconfig"):
        connection.connection_info()


def test_kopfs_login_handler_turns_a_failure_into_kopfs_login_error(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(kopf.LoginError):
        connection.login(settings=kopf.OperatorSettings())


BODIES = {
    "fresh": {
        "apiVersion": "eft.dev/v1alpha1",
        "kind": "EmbeddingFinetune",
        "metadata": {"name": "a", "namespace": "n", "uid": "u1", "generation": 1, "labels": {"team": "x"}},
        "spec": {"model": {"base": "m"}, "training": {"epochs": 1, "loss": ["MNRL"]}},
    },
    "handled, with status and managedFields": {
        "apiVersion": "eft.dev/v1alpha1",
        "kind": "EmbeddingFinetune",
        "metadata": {
            "name": "a",
            "namespace": "n",
            "uid": "u1",
            "resourceVersion": "42",
            "generation": 3,
            "annotations": {
                "finetune.eft.dev/last-handled-spec": '{"spec": {"model": {"base": "m"}}}',
                "finetune.eft.dev/reconcile": '{"started": "x"}',
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "team.example/owner": "ml",
            },
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:model": {}}}}] * 20,
        },
        "spec": {"model": {"base": "m2"}, "evaluation": {"k": [1, 10]}},
        "status": {"phase": "Running", "runs": [{"id": f"r{i}", "results": {"ndcg": 0.5}} for i in range(30)]},
    },
    "no annotations, no labels": {"metadata": {"name": "b"}, "spec": {}},
}


@pytest.mark.parametrize("name", list(BODIES))
def test_the_slim_diffbase_equals_kopfs_own(name: str) -> None:
    raw = BODIES[name]
    ours = SpecDiffBase(prefix="finetune.eft.dev", key="last-handled-spec")
    kopfs = kopf.AnnotationsDiffBaseStorage(prefix="finetune.eft.dev", key="last-handled-spec")
    before = copy.deepcopy(raw)
    assert ours.build(body=kopf.Body(raw)) == kopfs.build(body=kopf.Body(raw))  # type: ignore[arg-type]
    assert raw == before, "building the essence must not change the body"


def test_the_operator_image_installs_no_kubernetes_client_library() -> None:
    """kopf imports the models of whichever Kubernetes client is installed (about 30 MB each, unused by the
    operator): the image's lock leaves both out."""
    lock = (Path(__file__).resolve().parents[2] / "operator" / "requirements.lock").read_text()
    pinned = {line.split("==")[0].lower() for line in lock.splitlines() if "==" in line}
    assert "kopf" in pinned and "aiohttp" in pinned
    assert not pinned & {"kubernetes", "kubernetes_asyncio", "kubernetes-asyncio"}
