"""The platform policy's pure check (eft_api.policy) and ``eft validate --policy``, table by table (fast)."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from policy_cases import CASES, POLICY, SCHEMA, TEAM_A, TEAM_B, Case, resource

from eft_api import policy
from eft_api.spec import parse_resource
from eft_cli import validate

REPO = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((REPO / "crds" / "embeddingfinetunes.yaml").read_text(encoding="utf-8"))
CHART_VALUES = yaml.safe_load((REPO / "charts" / "embedding-finetune-operator" / "values.yaml").read_text())
PLATFORM = policy.load(POLICY)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_each_case_is_a_valid_resource_judged_as_the_table_says(case: Case) -> None:
    doc = resource(case)
    if case.refused is not None and case.refused[1] == SCHEMA:
        assert case.refused[0] in [p.path for p in validate.check_document(doc)]
        assert policy.first_violation(doc, PLATFORM.for_namespace(case.namespace)) is not None  # twice refused
        return
    parse_resource(doc)  # a refusal comes from the policy, never from the schema
    first = policy.first_violation(doc, PLATFORM.for_namespace(case.namespace))
    assert (None if first is None else (first.field, first.rule)) == case.refused
    if first is not None:
        assert str(first).startswith(f"{first.field}: refused by {first.rule}: ")
        assert any(w in first.message for w in ("platform", "never allowed", "must not"))


def test_eft_validate_policy_prints_the_same_field_and_rule(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"policy": POLICY}))
    for case in CASES:
        path = tmp_path / f"{case.id}.yaml"
        path.write_text(yaml.safe_dump(resource(case)))
        out = io.StringIO()
        check = validate.policy_checker(str(values), case.namespace)
        code = validate.validate_files([str(path)], out, check=check)
        assert code == (0 if case.refused is None else 1), (case.id, out.getvalue())
        first = re.search(r": (spec[\w.\[\]]*): (?:refused by (policy\.\w+)|.*must be an http)", out.getvalue())
        verdict = None if first is None else (first.group(1), first.group(2) or SCHEMA)
        assert verdict == case.refused, case.id


def test_eft_validate_cli_takes_policy_and_namespace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from eft_cli.main import main

    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"policy": POLICY}))
    doc = tmp_path / "r.yaml"
    doc.write_text(yaml.safe_dump(resource(CASES[0])))
    assert main(["validate", "--policy", str(values), "-n", TEAM_A, str(doc)]) == 0
    assert main(["validate", "--policy", str(values), "-n", TEAM_B, str(doc)]) == 1
    assert "spec.data.train.uri: refused by policy.buckets: bucket team-a-data" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"policy": {"buckets": ["Team-A"]}}))
    assert main(["validate", "--policy", str(bad), str(doc)]) == 2
    assert "policy values are invalid" in capsys.readouterr().err


def test_the_chart_defaults_are_closed() -> None:
    closed = policy.load(CHART_VALUES["policy"]).for_namespace("anyone")
    assert closed == policy.Policy()
    assert not closed.allow_trust_remote_code and closed.buckets == ("*",)
    for key in ("llmEndpoints", "storageEndpoints", "registryEndpoints", "notifyEndpoints", "priorityClasses"):
        assert CHART_VALUES["policy"][key] == [], key


def test_overrides_replace_keys_of_the_defaults_one_by_one() -> None:
    a, b = PLATFORM.for_namespace(TEAM_A), PLATFORM.for_namespace(TEAM_B)
    assert a.buckets == ("team-a-*", "models") and b.buckets == ("shared-*",)
    assert a.max_work_dir_size == "300Gi" and b.max_work_dir_size == "200Gi"
    assert a.notify_endpoints == ("http://reindex.search.svc:8080/events",) and b.notify_endpoints == ()


@pytest.mark.parametrize(
    "values",
    [
        {"buckets": ["a*b"]},
        {"llmEndpoints": ["https://user@host/"]},
        {"llmEndpoints": ["HTTPS://Host/"]},
        {"llmEndpoints": ["ftp://host/"]},
        {"maxWorkDirSize": "lots"},
        {"llmEndpoints": ["https://h/it's"]},
        {"priorityClasses": ["Not A Name"]},
        {"tolerationKeys": ["a b"]},
        {"unknown": 1},
        {"namespaces": {"x": {"buckets": "not-a-list"}}},
        {"namespaces": {"x": {"namespaces": {}}}},
    ],
)
def test_bad_policy_values_are_refused_naming_the_key(values: dict[str, Any]) -> None:
    with pytest.raises(policy.PolicyError):
        policy.load(values)


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        ("https://API.Example.com./v1/", ("https", "api.example.com", "443", "/v1", "")),
        ("http://h:8000", ("http", "h", "8000", "", "")),
        ("https://[::1]:8443/x", ("https", "[::1]", "8443", "/x", "")),
        ("https://[::1]/x", ("https", "[::1]", "443", "/x", "")),
        ("https://u:p@h/", ("https", "u", "p@h", "", "user-info")),
        ("https://h/a/%2E%2E/b", ("https", "h", "443", "/a/%2E%2E/b", ". or ..")),
        ("https://h/a/./b", ("https", "h", "443", "/a/./b", ". or ..")),
        ("https://h\\@e/", ("https", "h\\@e", "443", "", "user-info")),
    ],
)
def test_urls_are_split_as_the_admission_policy_splits_them(url: str, parts: tuple[str, ...]) -> None:
    u = policy.parse_url(url)
    assert (u.scheme, u.host, u.port, u.path) == parts[:4]
    assert (parts[4] in u.bad) if parts[4] else u.bad == ""


@pytest.mark.parametrize(
    ("bucket", "patterns", "allowed"),
    [
        ("team-a-x", ("team-a-*",), True),
        ("team-ab", ("team-a-*",), False),
        ("team-a-", ("team-a-*",), True),
        ("models", ("models",), True),
        ("models2", ("models",), False),
        ("anything", ("*",), True),
        ("anything", (), False),
    ],
)
def test_bucket_patterns_glob_only_at_the_end(bucket: str, patterns: tuple[str, ...], allowed: bool) -> None:
    assert policy.bucket_allowed(bucket, patterns) is allowed


@pytest.mark.parametrize(
    ("text", "value"),
    [("200Gi", 200 * 2**30), ("0.3Ti", int(0.3 * 2**40)), ("1e3", 1000), ("500m", 0.5), ("2k", 2000), (7, 7)],
)
def test_quantities(text: str | int, value: float) -> None:
    assert float(policy.quantity(text)) == pytest.approx(value)


def _paths(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for key, child in (node.get("properties") or {}).items():
        out += _paths(child, f"{path}.{key}")
    if node.get("type") == "array":
        out += _paths(node["items"], f"{path}[*]")
    return out


def test_every_s3_uri_field_of_the_crd_is_governed_by_the_buckets_rule() -> None:
    spec = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    s3 = {p for p, n in _paths(spec, "spec") if n.get("type") == "string" and "s3://" in n.get("pattern", "")}
    assert s3 == set(policy.S3_FIELDS)
    urls = {p for p, n in _paths(spec, "spec") if n.get("type") == "string" and "https?://" in n.get("pattern", "")}
    governed = {f for r in policy.RULES if r.key.endswith("Endpoints") for f in r.fields}
    assert urls <= governed, urls - governed
    remote = {p for p, _ in _paths(spec, "spec") if p.endswith(".trustRemoteCode")}
    assert remote == set(policy.RULES[0].fields)


def test_rule_keys_are_the_policy_keys() -> None:
    keys = {r.key for r in policy.RULES}
    aliases = {f.alias for f in policy.Policy.model_fields.values()}
    assert keys <= aliases
    chart_keys = set(CHART_VALUES["policy"]) - {"namespaces"}
    assert chart_keys == aliases  # the chart's values and the model name the same keys


def test_the_chart_schema_checks_entries_as_the_model_does() -> None:
    import json

    schema = json.loads((REPO / "charts" / "embedding-finetune-operator" / "values.schema.json").read_text())
    keys = schema["properties"]["policy"]["properties"]
    for key in ("llmEndpoints", "storageEndpoints", "registryEndpoints", "notifyEndpoints"):
        assert keys[key]["items"]["pattern"] == policy.ENDPOINT_ENTRY, key
        assert (
            keys["namespaces"]["additionalProperties"]["properties"][key]["items"]["pattern"] == policy.ENDPOINT_ENTRY
        )
    assert keys["buckets"]["items"]["pattern"] == policy.BUCKET_ENTRY


def test_a_baselines_endpoint_model_and_remote_code_are_held_to_the_policy() -> None:
    """Baselines (spec.evaluation.baselines) go through the rules of the llm endpoint, the buckets and remote code
    (eft validate --policy and the operator; the chart's admission policy too: tests/policy_cases.py)."""
    doc = yaml.safe_load((Path(__file__).parents[2] / "examples" / "baselines-and-merge.yaml").read_text())
    doc["spec"]["evaluation"]["baselines"][0]["model"] |= {"base": "s3://other-bucket/m/", "trustRemoteCode": True}
    found = {(v.field, v.rule) for v in policy.violations(doc, policy.Policy(buckets=("eft-*",)))}
    assert found == {
        ("spec.evaluation.baselines[1].endpoint.url", "policy.llmEndpoints"),
        ("spec.evaluation.baselines[0].model.base", "policy.buckets"),
        ("spec.evaluation.baselines[0].model.trustRemoteCode", "policy.allowTrustRemoteCode"),
    }
    allowed = policy.Policy(
        buckets=("*",), llm_endpoints=("http://vllm.llm.svc:8000/v1",), allow_trust_remote_code=True
    )
    assert policy.violations(doc, allowed) == []
