"""The hostile tenant's table: one resource per case and the platform policy's verdict on it.

Every case is judged three ways that must agree on the verdict, the field and the rule: eft_api.policy (the
operator's check), ``eft validate --policy`` and the chart's ValidatingAdmissionPolicy on the real API
server (tests/chart/test_hostile_tenant.py). ``team-a`` has overrides; ``team-b`` gets the defaults.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from eft_api.spec import API_GROUP, API_VERSION, KIND

TEAM_A, TEAM_B = "team-a", "team-b"
#: The rule of a refusal by the CRD's schema (bad input whatever the policy), not by the platform policy.
SCHEMA = "schema"

#: The platform's policy values for the table (the chart's `policy` key), with the real namespaces named
#: by :func:`values_for`.
POLICY: dict[str, Any] = {
    "buckets": ["shared-*"],
    "namespaces": {
        TEAM_A: {
            "buckets": ["team-a-*", "models"],
            "llmEndpoints": ["https://api.example.com/v1", "http://vllm.llm.svc:8000/v1"],
            "storageEndpoints": ["https://minio.team-a.example.com"],
            "registryEndpoints": ["http://mlflow.mlops.svc:5000"],
            "notifyEndpoints": ["http://reindex.search.svc:8080/events"],
            "priorityClasses": ["team-a-batch"],
            "tolerationKeys": ["gpu"],
            "nodeSelectorKeys": ["node.kubernetes.io/instance-type"],
            "allowTrustRemoteCode": True,
            "maxWorkDirSize": "300Gi",
        }
    },
}


def values_for(team_a: str, team_b: str) -> dict[str, Any]:
    """:data:`POLICY` with the override keyed by the real namespace of team-a (team-b has none)."""
    del team_b
    values = copy.deepcopy(POLICY)
    values["namespaces"] = {team_a: values["namespaces"][TEAM_A]}
    return values


@dataclass(frozen=True)
class Case:
    id: str
    namespace: str
    #: Dotted path -> value set on the base spec ("spec.storage.endpoint": ...); list items by index.
    set: dict[str, Any] = field(default_factory=dict)
    #: (field, rule) of the first refusal, or None when the resource is allowed.
    refused: tuple[str, str] | None = None
    base: str = "pairs"


BASES: dict[str, dict[str, Any]] = {
    "pairs": {
        "model": {"base": "sentence-transformers/all-MiniLM-L6-v2"},
        "data": {"train": {"uri": "s3://team-a-data/pairs.jsonl", "format": "pairs"}},
        "output": {"uri": "s3://team-a-out/runs/"},
    },
    "shared": {
        "model": {"base": "sentence-transformers/all-MiniLM-L6-v2"},
        "data": {"train": {"uri": "s3://shared-data/pairs.jsonl", "format": "pairs"}},
        "output": {"uri": "s3://shared-out/runs/"},
    },
    "llm": {
        "model": {"base": "BAAI/bge-small-en-v1.5"},
        "data": {
            "train": {"uri": "s3://team-a-data/documents/", "format": "documents"},
            "generate": {
                "generator": {
                    "llm": {
                        "endpoint": "https://api.example.com/v1",
                        "model": "gpt-4o-mini",
                        "apiKeySecret": {"name": "llm-key"},
                    }
                }
            },
        },
        "output": {"uri": "s3://team-a-out/models/"},
    },
    "distillation": {
        "model": {"base": "sentence-transformers/all-MiniLM-L6-v2"},
        "data": {"train": {"uri": "s3://team-a-data/pairs/", "format": "pairs"}},
        "training": {
            "method": "distillation",
            "loss": "MSE",
            "teacher": {"base": "sentence-transformers/all-mpnet-base-v2"},
        },
        "output": {"uri": "s3://team-a-out/models/"},
    },
}

TOLERATE_GPU = {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}
GUARD = {"name": "faq", "uri": "s3://team-a-data/guards/faq.jsonl", "maxDrop": 0.02}
LLM = "spec.data.generate.generator.llm.endpoint"
REGISTRY = "spec.output.registry.mlflow.trackingUri"
MLFLOW = {"trackingUri": "http://mlflow.mlops.svc:5000", "modelName": "search"}
B, A = TEAM_B, TEAM_A
BASELINES = "spec.evaluation.baselines"
MINI = {"name": "mini", "model": {"base": "sentence-transformers/all-MiniLM-L6-v2", "maxSeqLength": 128}}


def served(url: str, name: str = "served") -> dict[str, Any]:
    """An endpoint baseline at ``url`` with its key in a Secret."""
    return {"name": name, "endpoint": {"url": url, "model": "e5-small", "apiKeySecret": {"name": "emb-key"}}}


def mini(**model: Any) -> dict[str, Any]:
    """A model baseline: the MiniLM with ``model`` fields replaced."""
    return {"name": "mini2", "model": {**MINI["model"], **model}}


CASES: list[Case] = [
    # Buckets: judged by the bucket (never by the key), globs only at the end.
    Case("own-buckets", A),
    Case("shared-buckets-for-the-defaults", B, base="shared"),
    Case("another-teams-bucket", B, refused=("spec.data.train.uri", "policy.buckets")),
    Case("prefix-sharing-bucket", A, {"spec.output.uri": "s3://team-ab/x/"}, ("spec.output.uri", "policy.buckets")),
    Case("dot-dot-key", A, {"spec.data.train.uri": "s3://other-bucket/../team-a-data/x.jsonl"},
         ("spec.data.train.uri", "policy.buckets")),
    Case("dot-dot-into-another-bucket-is-still-own-bucket", A, {"spec.output.uri": "s3://team-a-out/../../other/"}),
    Case("exact-bucket", A, {"spec.output.uri": "s3://models/team-a/"}),
    Case("exact-bucket-is-not-a-prefix", A, {"spec.output.uri": "s3://models2/"}, ("spec.output.uri", "policy.buckets")),
    Case("model-from-another-bucket", A, {"spec.model.base": "s3://shared-models/x/"},
         ("spec.model.base", "policy.buckets")),
    Case("hub-model-is-no-bucket", B, {"spec.model.base": "intfloat/e5-small-v2"}, base="shared"),
    Case("eval-from-another-bucket", A, {"spec.data.eval.uri": "s3://b-data/eval.jsonl"},
         ("spec.data.eval.uri", "policy.buckets")),
    Case("second-guard-in-another-bucket", A,
         {"spec.evaluation.guards": [GUARD, {**GUARD, "name": "x", "uri": "s3://team-b-data/g.jsonl"}]},
         ("spec.evaluation.guards[1].uri", "policy.buckets")),
    Case("teacher-from-another-bucket", A, {"spec.training.teacher.base": "s3://team-b-models/t/"},
         ("spec.training.teacher.base", "policy.buckets"), base="distillation"),
    # Remote code.
    Case("trust-remote-code-by-default", B, {"spec.model.trustRemoteCode": True}, ("spec.model.trustRemoteCode",
         "policy.allowTrustRemoteCode"), base="shared"),
    Case("trust-remote-code-allowed-for-team-a", A, {"spec.model.trustRemoteCode": True}),
    Case("teacher-trust-remote-code", B,
         {"spec.training.teacher.trustRemoteCode": True, "spec.data.train.uri": "s3://shared-d/p/",
          "spec.output.uri": "s3://shared-o/"},
         ("spec.training.teacher.trustRemoteCode", "policy.allowTrustRemoteCode"), base="distillation"),
    # LLM endpoints: the Secret's value goes only where the platform allows.
    Case("llm-allowed", A, base="llm"),
    Case("llm-case-and-trailing-dot", A, {LLM: "https://API.Example.COM./v1/"}, base="llm"),
    Case("llm-explicit-default-port-and-subpath", A, {LLM: "https://api.example.com:443/v1/chat"}, base="llm"),
    Case("llm-http-instead-of-https", A, {LLM: "http://api.example.com/v1"}, (LLM, "policy.llmEndpoints"), base="llm"),
    Case("llm-host-sharing-a-prefix", A, {LLM: "https://api.example.com.evil.net/v1"}, (LLM, "policy.llmEndpoints"),
         base="llm"),
    Case("llm-path-sharing-a-prefix", A, {LLM: "https://api.example.com/v10"}, (LLM, "policy.llmEndpoints"),
         base="llm"),
    Case("llm-dot-dot", A, {LLM: "https://api.example.com/v1/../admin"}, (LLM, "policy.llmEndpoints"), base="llm"),
    # User-info is bad input before any policy: the schema refuses an @ in an endpoint (rule "schema").
    Case("llm-user-info", A, {LLM: "https://user:pass@api.example.com/v1"}, (LLM, SCHEMA), base="llm"),
    Case("llm-at-trick", A, {LLM: "https://api.example.com@evil.net/v1"}, (LLM, SCHEMA), base="llm"),
    Case("storage-user-info", A, {"spec.storage.endpoint": "https://k:s@minio.team-a.example.com"},
         ("spec.storage.endpoint", SCHEMA)),
    Case("llm-ip-literal", A, {LLM: "https://93.184.216.34/v1"}, (LLM, "policy.llmEndpoints"), base="llm"),
    Case("llm-ipv6-literal", A, {LLM: "https://[::1]:8000/v1"}, (LLM, "policy.llmEndpoints"), base="llm"),
    Case("llm-other-port", A, {LLM: "https://api.example.com:8443/v1"}, (LLM, "policy.llmEndpoints"), base="llm"),
    Case("llm-in-cluster-http", A, {LLM: "http://vllm.llm.svc:8000/v1"}, base="llm"),
    Case("llm-in-cluster-default-port", A, {LLM: "http://vllm.llm.svc/v1"}, (LLM, "policy.llmEndpoints"), base="llm"),
    Case("llm-in-cluster-https", A, {LLM: "https://vllm.llm.svc:8000/v1"}, (LLM, "policy.llmEndpoints"), base="llm"),
    Case("llm-query", A, {LLM: "https://api.example.com/v1?x=1"}, (LLM, "policy.llmEndpoints"), base="llm"),
    Case("llm-refused-by-default", B,
         {"spec.data.train.uri": "s3://shared-d/docs/", "spec.output.uri": "s3://shared-o/"},
         (LLM, "policy.llmEndpoints"), base="llm"),
    # Storage endpoints.
    Case("storage-allowed", A, {"spec.storage.endpoint": "https://minio.team-a.example.com"}),
    Case("storage-host-sharing-a-prefix", A, {"spec.storage.endpoint": "https://minio.team-a.example.com.evil.net"},
         ("spec.storage.endpoint", "policy.storageEndpoints")),
    Case("storage-http", A, {"spec.storage.endpoint": "http://minio.team-a.example.com"},
         ("spec.storage.endpoint", "policy.storageEndpoints")),
    Case("storage-refused-by-default", B, {"spec.storage.endpoint": "https://s3.attacker.example"},
         ("spec.storage.endpoint", "policy.storageEndpoints"), base="shared"),
    # The model registry and notifications (issue 22).
    Case("registry-allowed", A, {"spec.output.registry": {"mlflow": {**MLFLOW}}}),
    Case("registry-other-host", A, {"spec.output.registry": {"mlflow": {**MLFLOW, "trackingUri": "http://evil:5000"}}},
         (REGISTRY, "policy.registryEndpoints")),
    Case("registry-refused-by-default", B, {"spec.output.registry": {"mlflow": {**MLFLOW}}},
         (REGISTRY, "policy.registryEndpoints"), base="shared"),
    Case("notify-allowed", A, {"spec.notify": [{"url": "http://reindex.search.svc:8080/events/eft"}]}),
    Case("notify-second-refused", A,
         {"spec.notify": [{"url": "http://reindex.search.svc:8080/events"}, {"url": "https://hooks.attacker.example/x"}]},
         ("spec.notify[1].url", "policy.notifyEndpoints")),
    Case("notify-refused-by-default", B, {"spec.notify": [{"url": "http://reindex.search.svc:8080/events"}]},
         ("spec.notify[0].url", "policy.notifyEndpoints"), base="shared"),
    # Scheduling.
    Case("priority-class-allowed", A, {"spec.scheduling.priorityClassName": "team-a-batch"}),
    Case("priority-class-system", A, {"spec.scheduling.priorityClassName": "system-cluster-critical"},
         ("spec.scheduling.priorityClassName", "policy.priorityClasses")),
    Case("priority-class-by-default", B, {"spec.scheduling.priorityClassName": "team-a-batch"},
         ("spec.scheduling.priorityClassName", "policy.priorityClasses"), base="shared"),
    Case("toleration-allowed", A, {"spec.scheduling.tolerations": [TOLERATE_GPU]}),
    Case("toleration-keyless-exists", A, {"spec.scheduling.tolerations": [{"operator": "Exists"}]},
         ("spec.scheduling.tolerations[0]", "policy.tolerationKeys")),
    Case("toleration-control-plane", A,
         {"spec.scheduling.tolerations": [TOLERATE_GPU, {"key": "node-role.kubernetes.io/control-plane",
                                                         "operator": "Exists"}]},
         ("spec.scheduling.tolerations[1]", "policy.tolerationKeys")),
    Case("toleration-by-default", B, {"spec.scheduling.tolerations": [TOLERATE_GPU]},
         ("spec.scheduling.tolerations[0]", "policy.tolerationKeys"), base="shared"),
    Case("node-selector-allowed", A, {"spec.scheduling.nodeSelector": {"node.kubernetes.io/instance-type": "g5"}}),
    Case("node-selector-other-key", A, {"spec.scheduling.nodeSelector": {"kubernetes.io/hostname": "cp-1"}},
         ("spec.scheduling.nodeSelector", "policy.nodeSelectorKeys")),
    Case("node-selector-any-key-by-default", B, {"spec.scheduling.nodeSelector": {"pool": "x"}}, base="shared"),
    # Scratch disk.
    Case("work-dir-at-the-default-max", B, {"spec.resources.workDirSize": "200Gi"}, base="shared"),
    Case("work-dir-over-the-default-max", B, {"spec.resources.workDirSize": "0.3Ti"},
         ("spec.resources.workDirSize", "policy.maxWorkDirSize"), base="shared"),
    Case("work-dir-as-bytes", B, {"spec.resources.workDirSize": 214748364800}, base="shared"),
    Case("work-dir-over-for-team-a", A, {"spec.resources.workDirSize": "1Ti"},
         ("spec.resources.workDirSize", "policy.maxWorkDirSize")),
    # Baselines (spec.evaluation.baselines): an endpoint is held to llmEndpoints (its Secret goes there), a model to
    # the buckets and to allowTrustRemoteCode, like spec.model.
    Case("baseline-endpoint-allowed", A, {BASELINES: [MINI, served("http://vllm.llm.svc:8000/v1")]}),
    Case("baseline-endpoint-foreign", A, {BASELINES: [MINI, served("https://embed.attacker.example/v1")]},
         (f"{BASELINES}[1].endpoint.url", "policy.llmEndpoints")),
    Case("baseline-endpoint-host-sharing-a-prefix", A, {BASELINES: [served("https://api.example.com.evil.net/v1")]},
         (f"{BASELINES}[0].endpoint.url", "policy.llmEndpoints")),
    Case("baseline-endpoint-dot-dot", A, {BASELINES: [served("https://api.example.com/v1/../admin")]},
         (f"{BASELINES}[0].endpoint.url", "policy.llmEndpoints")),
    Case("baseline-endpoint-refused-by-default", B, {BASELINES: [served("https://api.example.com/v1")]},
         (f"{BASELINES}[0].endpoint.url", "policy.llmEndpoints"), base="shared"),
    Case("baseline-endpoint-second-of-two", A,
         {BASELINES: [served("https://api.example.com/v1/"), served("https://api.example.com:8443/v1", "b")]},
         (f"{BASELINES}[1].endpoint.url", "policy.llmEndpoints")),
    Case("baseline-endpoint-after-the-llm-generator", A,
         {LLM: "https://llm.attacker.example/v1", BASELINES: [served("https://embed.attacker.example/v1")]},
         (LLM, "policy.llmEndpoints"), base="llm"),
    Case("baseline-endpoint-user-info", A, {BASELINES: [served("https://k:s@api.example.com/v1")]},
         (f"{BASELINES}[0].endpoint.url", SCHEMA)),
    Case("baseline-hub-model", B, {BASELINES: [MINI]}, base="shared"),
    Case("baseline-model-own-bucket", A, {BASELINES: [mini(base="s3://team-a-models/m/")]}),
    Case("baseline-model-from-another-bucket", A, {BASELINES: [MINI, mini(base="s3://team-b-models/m/")]},
         (f"{BASELINES}[1].model.base", "policy.buckets")),
    Case("baseline-bucket-before-the-output", A,
         {BASELINES: [mini(base="s3://b-models/m/")], "spec.output.uri": "s3://b-out/"},
         (f"{BASELINES}[0].model.base", "policy.buckets")),
    Case("baseline-trust-remote-code-by-default", B, {BASELINES: [MINI, mini(trustRemoteCode=True)]},
         (f"{BASELINES}[1].model.trustRemoteCode", "policy.allowTrustRemoteCode"), base="shared"),
    Case("baseline-trust-remote-code-allowed-for-team-a", A, {BASELINES: [mini(trustRemoteCode=True)]}),
    Case("baseline-remote-code-before-its-endpoint", B,
         {BASELINES: [served("https://embed.attacker.example/v1"), mini(trustRemoteCode=True)]},
         (f"{BASELINES}[1].model.trustRemoteCode", "policy.allowTrustRemoteCode"), base="shared"),
    # The first refusal in rule order is reported.
    Case("several-refusals-report-the-first", B,
         {"spec.model.trustRemoteCode": True, "spec.scheduling.priorityClassName": "x"},
         ("spec.model.trustRemoteCode", "policy.allowTrustRemoteCode"), base="shared"),
]  # fmt: skip


def resource(case: Case, name: str | None = None) -> dict[str, Any]:
    """The case's EmbeddingFinetune (its base spec with ``case.set`` applied)."""
    spec = copy.deepcopy(BASES[case.base])
    for path, value in case.set.items():
        parts = path.split(".")[1:]
        node = spec
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = copy.deepcopy(value)
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {"name": name or case.id[:63]},
        "spec": spec,
    }
