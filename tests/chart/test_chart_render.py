"""The chart renders, lints and validates (strict, Kubernetes 1.32) for every scenario of the values matrix."""

from __future__ import annotations

import json
import re
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml
from chart_render import (
    CHART_DIR,
    NAMESPACE,
    SCENARIOS,
    by_kind,
    docs_of,
    env_of,
    one,
    render_files,
    scenario_files,
    scenario_objects,
)

KUBE_VERSION = "1.32.0"
#: Kinds from CRDs that kubernetes-validate does not know: checked structurally below.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("kopf.dev/v1", "ClusterKopfPeering"),
    ("kopf.dev/v1", "KopfPeering"),
}
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_lint_is_clean(scenario: str) -> None:
    report = helm_python.lint(CHART_DIR, SCENARIOS[scenario], strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_manifest_validates_strictly(scenario: str) -> None:
    docs = scenario_objects(scenario)
    assert docs
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_objects_are_unique_and_well_named(scenario: str) -> None:
    seen: set[tuple[str, str, str]] = set()
    for doc in scenario_objects(scenario):
        meta = doc["metadata"]
        key = (doc["kind"], meta.get("namespace", ""), meta["name"])
        assert key not in seen, f"{key} rendered twice"
        seen.add(key)
        assert len(meta["name"]) <= 63 or doc["kind"] == "CustomResourceDefinition"
        assert DNS1123.match(meta["name"].replace(".", "-")), meta["name"]
        assert meta["labels"]["app.kubernetes.io/name"], key


def test_one_resource_per_template_file() -> None:
    """Each template renders one kind (a template may repeat it once per watched namespace)."""
    for scenario in SCENARIOS:
        for path, text in scenario_files(scenario).items():
            kinds = set(re.findall(r"(?m)^kind: (\w+)", text))
            assert len(kinds) <= 1, f"{path} renders {kinds} in {scenario}"


def _monitor_endpoints(doc: dict[str, Any]) -> list[dict[str, Any]]:
    key = "endpoints" if doc["kind"] == "ServiceMonitor" else "podMetricsEndpoints"
    endpoints: list[dict[str, Any]] = doc["spec"][key]
    return endpoints


def test_service_and_pod_monitors_are_structurally_sound() -> None:
    docs = scenario_objects("integrations")
    service = one(docs, "Service")
    deployment = one(docs, "Deployment")
    sm, pm = one(docs, "ServiceMonitor"), one(docs, "PodMonitor")
    for doc in (sm, pm):
        assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
        assert doc["metadata"]["namespace"] == NAMESPACE
        for ep in _monitor_endpoints(doc):
            assert ep["port"] == "metrics" and ep["path"] == "/metrics"
            assert re.fullmatch(r"\d+s", ep["interval"]) and re.fullmatch(r"\d+s", ep["scrapeTimeout"])
    # The ServiceMonitor selects the operator's Service, and that Service exposes a port named metrics
    # that targets the container port named metrics.
    selector = sm["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    (port,) = service["spec"]["ports"]
    assert port["name"] == "metrics" and port["targetPort"] == "metrics"
    container_ports = {
        p["name"]: p["containerPort"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert container_ports["metrics"] == int(env_of(deployment)["EFT_METRICS_PORT"])
    # The PodMonitor selects trainer pods by the labels the operator puts on them, in every namespace.
    assert pm["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "eft-trainer",
        "app.kubernetes.io/managed-by": "eft-operator",
    }
    assert pm["spec"]["namespaceSelector"] == {"any": True}
    namespaced = one(scenario_objects("namespaced-peering-integrations"), "PodMonitor")
    assert namespaced["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}


def test_integrations_are_off_by_default() -> None:
    kinds = {d["kind"] for d in scenario_objects("defaults")}
    assert kinds == {
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        # Not an integration but the image allowlist's admission twin: on by default, like the allowlist.
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        # The leader Lease's Role and RoleBinding, and the pre-delete hook that releases finalizers.
        "Role",
        "RoleBinding",
        "Job",
    }
    env = env_of(one(scenario_objects("defaults"), "Deployment"))
    assert env["EFT_DEFAULT_QUEUE_NAME"] == ""
    assert env["EFT_PEERING_NAME"] == ""


def test_operator_settings_reach_the_operator_as_env() -> None:
    deployment = one(scenario_objects("defaults"), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 1
    # The new pod waits as a standby until the old one releases the Lease on SIGTERM.
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    (container,) = pod["containers"]
    assert container["command"] == ["eft-operator"]
    env = env_of(deployment)
    assert json.loads(env.pop("EFT_POLICY")) == yaml.safe_load((CHART_DIR / "values.yaml").read_text())["policy"]
    assert env == {
        "EFT_WATCH_NAMESPACES": "",
        "EFT_TRAINER_IMAGE": "ghcr.io/eft-dev/eft-trainer:0.1.0",
        "EFT_ALLOWED_IMAGES": "ghcr.io/eft-dev/eft-trainer",
        "EFT_TRAINER_SERVICE_ACCOUNT": "",
        "EFT_DEFAULT_QUEUE_NAME": "",
        "EFT_METRICS_PORT": "8080",
        "EFT_HEALTH_PORT": "8081",
        "EFT_TRAINER_METRICS_PORT": "9090",
        "EFT_PROGRESS_INTERVAL": "10",
        "EFT_PEERING_NAME": "",
        "EFT_LOG_LEVEL": "INFO",
        "EFT_LEADER_ELECTION": "true",
        "EFT_LEASE_NAME": "eft-embedding-finetune-operator",
        "EFT_LEASE_NAMESPACE": deployment["metadata"]["namespace"],
        "EFT_LEASE_DURATION": "15",
        "EFT_RENEW_DEADLINE": "10",
        "EFT_RETRY_PERIOD": "2",
    }
    assert container["image"] == "ghcr.io/eft-dev/eft-operator:0.1.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert ports[get["port"]] == 8081
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]

    env = env_of(one(scenario_objects("namespaced"), "Deployment"))
    assert env["EFT_WATCH_NAMESPACES"] == "team-a,team-b"
    assert env["EFT_TRAINER_SERVICE_ACCOUNT"] == "eft-embedding-finetune-operator-trainer"

    env = env_of(one(scenario_objects("integrations"), "Deployment"))
    assert env["EFT_DEFAULT_QUEUE_NAME"] == "gpu-queue"
    assert env["EFT_TRAINER_SERVICE_ACCOUNT"] == "eft-embedding-finetune-operator-trainer"

    files = render_files(
        {"operator": {"metricsPort": 9100, "healthPort": 9101, "logLevel": "DEBUG"}, "trainer": {"metricsPort": 9200}}
    )
    deployment = one(docs_of(files), "Deployment")
    env = env_of(deployment)
    assert (env["EFT_METRICS_PORT"], env["EFT_HEALTH_PORT"], env["EFT_TRAINER_METRICS_PORT"], env["EFT_LOG_LEVEL"]) == (
        "9100",
        "9101",
        "9200",
        "DEBUG",
    )
    ports = {p["name"]: p["containerPort"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert ports == {"metrics": 9100, "health": 9101}


def test_images_by_digest_win_over_tags() -> None:
    deployment = one(scenario_objects("digest"), "Deployment")
    assert (
        deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        == "ghcr.io/eft-dev/eft-operator@sha256:" + "a" * 64
    )
    assert env_of(deployment)["EFT_TRAINER_IMAGE"] == "registry.example.com/eft-dev/eft-trainer@sha256:" + "b" * 64
    files = render_files({"image": {"tag": "0.2.0-rc.1"}, "trainer": {"image": {"tag": "cuda12"}}})
    deployment = one(docs_of(files), "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/eft-dev/eft-operator:0.2.0-rc.1"
    assert env_of(deployment)["EFT_TRAINER_IMAGE"] == "ghcr.io/eft-dev/eft-trainer:cuda12"


def test_legacy_peering_objects_render_only_when_asked_for() -> None:
    docs = scenario_objects("peering")
    deployment = one(docs, "Deployment")
    peering = one(docs, "ClusterKopfPeering")
    assert env_of(deployment)["EFT_PEERING_NAME"] == peering["metadata"]["name"]
    # Created after its CRD: a hook, re-created on upgrade.
    assert peering["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    crd_names = {d["metadata"]["name"] for d in by_kind(docs, "CustomResourceDefinition")}
    assert crd_names == {"embeddingfinetunes.finetune.eft.dev", "clusterkopfpeerings.kopf.dev"}
    rules = one(docs, "ClusterRole")["rules"]
    assert {
        "apiGroups": ["kopf.dev"],
        "resources": ["clusterkopfpeerings"],
        "verbs": ["get", "list", "watch", "patch"],
    } in rules

    docs = scenario_objects("namespaced-peering-integrations")
    peerings = by_kind(docs, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["team-a", "team-b"]
    assert {d["metadata"]["name"] for d in by_kind(docs, "CustomResourceDefinition")} == {
        "embeddingfinetunes.finetune.eft.dev",
        "kopfpeerings.kopf.dev",
    }
    for role in [r for r in by_kind(docs, "Role") if not r["metadata"]["name"].endswith("-leader-election")]:
        assert {
            "apiGroups": ["kopf.dev"],
            "resources": ["kopfpeerings"],
            "verbs": ["get", "list", "watch", "patch"],
        } in role["rules"]

    # Otherwise (one replica or several): no peering objects, no peering rule; the Lease elects the leader.
    for scenario in ("defaults", "ha"):
        docs = scenario_objects(scenario)
        assert not by_kind(docs, "ClusterKopfPeering") and not by_kind(docs, "KopfPeering")
        assert all("kopf.dev" not in r["apiGroups"] for r in one(docs, "ClusterRole")["rules"])


def test_network_policy_allows_dns_s3_the_llm_endpoint_and_other_trainers_only() -> None:
    docs = scenario_objects("integrations")
    (policy,) = by_kind(docs, "NetworkPolicy")
    assert policy["metadata"]["namespace"] == "ml"
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "eft-trainer"
    assert spec["policyTypes"] == ["Egress", "Ingress"]
    dns, s3, llm, peers = spec["egress"]
    # The pods of a multi-node run reach each other (rendezvous and collectives), on any port, nothing else.
    assert peers == {"to": [{"podSelector": {"matchLabels": spec["podSelector"]["matchLabels"]}}]}
    assert sorted((p["protocol"], p["port"]) for p in dns["ports"]) == [("TCP", 53), ("UDP", 53)]
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert [t["ipBlock"]["cidr"] for t in s3["to"]] == ["10.20.0.0/16", "192.168.7.10/32"]
    assert s3["ports"] == [{"protocol": "TCP", "port": 9000}]
    assert [t["ipBlock"]["cidr"] for t in llm["to"]] == ["10.30.0.5/32"]
    assert llm["ports"] == [{"protocol": "TCP", "port": 8000}]
    namespaced = by_kind(scenario_objects("namespaced-peering-integrations"), "NetworkPolicy")
    assert all(len(p["spec"]["egress"]) == 3 for p in namespaced)  # dns, s3, peers: no llm cidrs, no llm rule
    assert sorted(p["metadata"]["namespace"] for p in namespaced) == ["team-a", "team-b"]


def test_network_policy_lets_the_operator_and_metrics_from_reach_the_metrics_port_and_peers_anything() -> None:
    docs = scenario_objects("integrations")
    (policy,) = by_kind(docs, "NetworkPolicy")
    operator, scrapers, peers = policy["spec"]["ingress"]
    # The operator reads progress from the metrics port: its pods (in the release namespace) and that port only.
    (source,) = operator["from"]
    assert source["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}}
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert source["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert source["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    assert operator["ports"] == scrapers["ports"] == [{"protocol": "TCP", "port": "metrics"}]
    # The port name is the trainer container's (the operator renders it; the operator reads its number).
    assert scrapers["from"] == [{"namespaceSelector": {}}]  # as the scenario sets it
    assert peers == {"from": [{"podSelector": {"matchLabels": policy["spec"]["podSelector"]["matchLabels"]}}]}
    default_np = {**SCENARIOS["integrations"], "networkPolicy": {}}
    (policy_default,) = by_kind(docs_of(render_files(default_np)), "NetworkPolicy")
    assert len(policy_default["spec"]["ingress"]) == 2  # the operator and the peers: metricsFrom's default is none
    narrowed = {"metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}
    values = {**SCENARIOS["integrations"]}
    values["networkPolicy"] = {**values["networkPolicy"], **narrowed}
    (policy,) = by_kind(docs_of(render_files(values)), "NetworkPolicy")
    assert policy["spec"]["ingress"][1]["from"] == narrowed["metricsFrom"]
    values["networkPolicy"] = {**values["networkPolicy"], "metricsFrom": []}
    (policy,) = by_kind(docs_of(render_files(values)), "NetworkPolicy")
    assert [r["from"][0] for r in policy["spec"]["ingress"]] == [source, peers["from"][0]]


def test_grafana_dashboard_config_map() -> None:
    cm = one(scenario_objects("integrations"), "ConfigMap")
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    (key,) = cm["data"]
    assert key.endswith(".json")


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"rbac": {"scope": "namespaced"}}, "watchNamespaces"),
        ({"watchNamespaces": ["a"]}, "watchNamespaces"),
        (
            {"networkPolicy": {"enabled": True, "s3": {"cidrs": []}}, "trainerNamespaces": ["ml"]},
            "networkPolicy.s3.cidrs",
        ),
        ({"networkPolicy": {"s3": {"cidrs": ["169.254.0.0/16"]}}, "trainerNamespaces": ["ml"]}, "169.254.0.0/16"),
        ({"networkPolicy": {"llm": {"cidrs": ["169.254.169.254/32"]}}, "trainerNamespaces": ["ml"]}, "metadata"),
    ],
)
def test_inconsistent_values_fail_with_the_key_to_fix(values: dict[str, Any], needle: str) -> None:
    with pytest.raises(helm_python.HelmError, match=re.escape(needle)):
        render_files(values)


def test_notes_give_the_next_steps() -> None:
    notes = scenario_files("namespaced")["embedding-finetune-operator/templates/NOTES.txt"]
    for step in (
        "apply -f examples/quickstart.yaml",
        "kubectl get eft -w",
        "--for=condition=Ready",
        ".status.artifacts",
    ):
        assert step in notes, step
    assert "team-a, team-b" in notes
    assert "-n team-a apply" in notes


def test_every_template_renders_in_some_scenario() -> None:
    rendered: set[str] = set()
    for scenario in SCENARIOS:
        for path, text in scenario_files(scenario).items():
            if re.search(r"(?m)^kind: ", text):
                rendered.add(path.rsplit("/", 1)[-1])
    templates = {p.name for p in (CHART_DIR / "templates").glob("*.yaml")}
    assert templates - rendered == set()


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_operator_accepts_the_settings_the_chart_gives_it(scenario: str) -> None:
    """Seam: the Deployment's env parses with the operator's own Settings, to the values the chart meant."""
    from eft_operator.config import Settings

    values = SCENARIOS[scenario]
    env = env_of(one(scenario_objects(scenario), "Deployment"))
    settings = Settings.from_env(env)
    assert settings.watch_namespaces == tuple(values.get("watchNamespaces", ()))
    assert settings.clusterwide == (values.get("rbac", {}).get("scope", "cluster") == "cluster")
    peered = values.get("peering", {}).get("enabled", False)  # legacy objects; the operator runs standalone
    assert settings.standalone is not peered
    assert settings.default_queue_name == (values.get("kueue", {}).get("defaultQueueName") or None)
    assert settings.trainer_image == env["EFT_TRAINER_IMAGE"]
    # The allowlist defaults to the default trainer image's repository, as the operator's own default.
    assert settings.image_prefixes == Settings(trainer_image=settings.trainer_image).image_prefixes
    assert settings.image_allowed(settings.trainer_image)
