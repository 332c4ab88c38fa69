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
from eft_operator.handlers import ProgressAnnotations, SpecDiffBase


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
    path = write_kubeconfig(
        tmp_path / "config", {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "x"}}
    )
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
                "finetune.eft.dev/kopf-managed": "yes",
                "finetune.eft.dev/retrain": "2026-12-05T00:00:00Z",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "team.example/owner": "ml",
            },
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:model": {}}}}] * 20,
        },
        "spec": {"model": {"base": "m2"}, "evaluation": {"k": [1, 10]}},
        "status": {"phase": "Running", "runs": [{"id": f"r{i}", "results": {"ndcg": 0.5}} for i in range(30)]},
    },
    "no annotations, no labels": {"metadata": {"name": "b"}, "spec": {}},
    "another kopf operator's annotations": {
        "metadata": {
            "name": "c",
            "labels": {},
            "annotations": {
                "kopf.zalando.org/last-handled-configuration": "{}",
                "other.example/kopf-managed": "yes",
                "other.example/handler": "{}",
                "sub.kopf.zalando.org/x": "1",
                "team.example/owner": "ml",
            },
        },
        "spec": {"model": {"base": "m", "prompts": {"query": "q: "}}, "list": [{"a": [1, 2]}]},
    },
}


#: What kopf passes as ``extra_fields``: the field of the update handler (``field="spec"``), as a path.
EXTRA_FIELDS = {None: None, "spec (the update handler)": {("spec",)}, "dotted": {"spec.model"}}


@pytest.mark.parametrize("extra", list(EXTRA_FIELDS))
@pytest.mark.parametrize("name", list(BODIES))
def test_the_slim_diffbase_equals_kopfs_own(name: str, extra: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The essence is kopf's own (for a resource kopf's annotation storage marked as its own, as every
    handled resource was), built without copying status and managedFields, and the body is left alone.
    With the extra fields kopf passes for the update handler too (until they were handled, every
    build fell back to kopf's deep copy: 2.6 s of a 300-resource burst's profile)."""
    raw = BODIES[name]
    extra_fields = EXTRA_FIELDS[extra]
    ours = SpecDiffBase("finetune.eft.dev")
    kopfs = kopf.AnnotationsDiffBaseStorage(prefix="finetune.eft.dev", key="last-handled-spec")
    marked = copy.deepcopy(raw)
    marked["metadata"].setdefault("annotations", {})["finetune.eft.dev/kopf-managed"] = "yes"
    before = copy.deepcopy(raw)
    expected = kopfs.build(body=kopf.Body(marked), extra_fields=extra_fields)  # type: ignore[arg-type]
    monkeypatch.setattr(copy, "deepcopy", _no_deepcopy)
    essence = ours.build(body=kopf.Body(raw), extra_fields=extra_fields)  # type: ignore[arg-type]
    monkeypatch.undo()
    assert essence == expected
    essence["spec"]["changed"] = True  # the essence is kept in memory: it shares nothing with the body
    for value in essence["spec"].values():
        if isinstance(value, dict):
            value["changed"] = True
    assert raw == before, "building the essence must not change the body, nor share its parts"


def _no_deepcopy(*_: Any, **__: Any) -> Any:
    raise AssertionError("copy.deepcopy was called: kopf's own build, not the slim one")


@pytest.mark.parametrize("fields", [{("status",)}, {"status.phase"}, {("status", "phase"), ("spec",)}])
def test_extra_fields_the_slim_diffbase_leaves_out_take_kopfs_build(fields: set[Any]) -> None:
    """A field outside what the slim build copies (status, metadata) is kopf's to add: its own build."""
    raw = BODIES["handled, with status and managedFields"]  # marked kopf-managed: kopf drops the prefix too
    essence = SpecDiffBase("finetune.eft.dev").build(body=kopf.Body(raw), extra_fields=fields)  # type: ignore[arg-type]
    kopfs = kopf.AnnotationsDiffBaseStorage(prefix="finetune.eft.dev", key="last-handled-spec")
    assert essence == kopfs.build(body=kopf.Body(raw), extra_fields=fields)  # type: ignore[arg-type]
    assert essence["status"]["phase"] == "Running"  # the extra field is in it


def test_the_diffbase_lives_in_memory_and_patches_nothing() -> None:
    """kopf's annotation storage patched every resource once more after its handler (one more request, one
    more watch event): the memory storage adds nothing to kopf's patch; a resource it never stored (this
    process has not handled it: a restart, a new leader) has none, so kopf handles it as created."""
    storage = SpecDiffBase("finetune.eft.dev")
    body = kopf.Body(copy.deepcopy(BODIES["fresh"]))  # type: ignore[arg-type]
    assert storage.fetch(body=body) is None
    patch = kopf.Patch()
    essence = storage.build(body=body)
    storage.store(body=body, patch=patch, essence=essence)
    assert not patch and storage.fetch(body=body) == essence and storage.handled() == 1
    storage.forget("u1")
    assert storage.fetch(body=body) is None and storage.handled() == 0


def test_a_handler_that_succeeds_at_once_leaves_kopf_nothing_to_patch() -> None:
    """kopf's own progress storage added its ``kopf-managed`` marker with the first record, and the marker
    alone made a patch (a request and a watch event) for every new resource."""
    storage = ProgressAnnotations(prefix="finetune.eft.dev")
    body = kopf.Body(copy.deepcopy(BODIES["fresh"]))  # type: ignore[arg-type]
    patch = kopf.Patch()
    storage.store(key=kopf.HandlerId("reconcile"), record={"started": "t", "success": True}, body=body, patch=patch)
    storage.purge(key=kopf.HandlerId("reconcile"), body=body, patch=patch)
    assert not patch


def test_a_retrying_handler_still_has_its_record_written_and_read_back() -> None:
    storage = ProgressAnnotations(prefix="finetune.eft.dev")
    patch = kopf.Patch()
    record = {"started": "2026-12-05T01:00:00", "retries": 2, "delayed": "2026-12-05T01:00:04", "failure": False}
    body = kopf.Body(copy.deepcopy(BODIES["fresh"]))  # type: ignore[arg-type]
    storage.store(key=kopf.HandlerId("reconcile"), record=record, body=body, patch=patch)  # type: ignore[arg-type]
    stored = copy.deepcopy(BODIES["fresh"])
    stored["metadata"]["annotations"] = dict(patch["metadata"]["annotations"])
    assert storage.fetch(key=kopf.HandlerId("reconcile"), body=kopf.Body(stored)) == record  # type: ignore[arg-type]
