"""Golden tests of the pure render (every rendered Job validated with kubernetes-validate) and `eft render`."""

from __future__ import annotations

import argparse
import io
import os
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from eft_api import contract
from eft_api.spec import parse_resource
from eft_cli.render import dump_yaml, render_file
from eft_operator.config import Settings, SettingsError
from eft_operator.render import Owner, render_children, spec_hash

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
SETTINGS = Settings(trainer_image="ghcr.io/eft-dev/eft-trainer:0.1.0")


def _render(path: Path, settings: Settings = SETTINGS) -> list[dict]:
    meta, spec = parse_resource(yaml.safe_load(path.read_text()))
    owner = Owner.of(meta.namespace or "default", meta.resolved_name, "11111111-2222-3333-4444-555555555555", 3, spec)
    return list(render_children(owner, spec, settings))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_golden_and_valid(path: Path) -> None:
    docs = _render(path)
    for doc in docs:
        kubernetes_validate.validate(doc, "1.32.0", strict=True)
    text = dump_yaml(docs)
    golden = GOLDEN / f"{path.stem}.yaml"
    if os.environ.get("EFT_UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert golden.exists(), f"{golden} missing: run with EFT_UPDATE_GOLDEN=1 and review the diff"
    assert text == golden.read_text(), f"{golden.name} differs: review, then regenerate with EFT_UPDATE_GOLDEN=1"


def test_job_follows_the_conventions() -> None:
    cm, job = _render(REPO / "examples" / "gpu-kueue.yaml", Settings(trainer_service_account="trainer"))
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert spec["suspend"] is True and job["metadata"]["labels"][contract.KUEUE_QUEUE_LABEL] == "ml-team-gpus"
    assert spec["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2, 3, 4]
    assert spec["podReplacementPolicy"] == "Failed" and pod["restartPolicy"] == "Never"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1" and pod["priorityClassName"] == "batch-low"
    assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == "trainer"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True and c["securityContext"]["capabilities"] == {
        "drop": ["ALL"]
    }
    assert {v["name"]: v for v in pod["volumes"]}["work"]["emptyDir"]["sizeLimit"] == "100Gi"
    refs = [e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e]
    assert {r["name"] for r in refs} == {"ml-team-s3"} and [r.get("optional") for r in refs] == [None, None, True]
    assert not any("value" in e and "secret" in e["name"].lower() for e in c["env"])
    config = contract.RunConfig.from_json(cm["data"][contract.RUN_CONFIG_KEY])
    # <output>/<namespace>/<name>/<run id>/, the run id naming the generation (3) and a short hash
    assert re.fullmatch(r"s3://ml-team-models/default/gpu-kueue/g3-[0-9a-f]{5}/", config.run.output_prefix)
    assert config.run.output_prefix.endswith(f"/{config.run.run_id}/") and cm["metadata"]["name"].endswith(
        config.run.run_id
    )


def test_quickstart_has_no_queue_and_no_gpu() -> None:
    _, job = _render(REPO / "examples" / "quickstart.yaml")
    assert job["spec"]["suspend"] is False and contract.KUEUE_QUEUE_LABEL not in job["metadata"]["labels"]
    assert "nvidia.com/gpu" not in job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    _, queued = _render(REPO / "examples" / "quickstart.yaml", Settings(default_queue_name="team-q"))
    assert queued["spec"]["suspend"] is True and queued["metadata"]["labels"][contract.KUEUE_QUEUE_LABEL] == "team-q"


def test_spec_hash_ignores_suspend_only() -> None:
    doc = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    _, a = parse_resource(doc)
    doc["spec"]["runPolicy"] = {"suspend": True}
    _, b = parse_resource(doc)
    doc["spec"]["training"]["epochs"] = 3
    _, c = parse_resource(doc)
    assert spec_hash(a) == spec_hash(b) != spec_hash(c)


def _args(file: str, **kw: object) -> argparse.Namespace:
    base = {"file": file, "image": None, "queue_name": None, "uid": None, "generation": None, "namespace": None}
    base.update(kw)
    return argparse.Namespace(**base)


def test_eft_render_cli(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    args = _args(
        str(REPO / "examples" / "quickstart.yaml"), image="local/t:dev", uid="u-1", generation=4, namespace="team"
    )
    assert render_file(args, out, err) == 0, err.getvalue()
    _cm, job = yaml.safe_load_all(out.getvalue())
    _, spec = parse_resource(yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text()))
    assert job["metadata"]["name"] == contract.child_name(
        "quickstart", contract.run_id("u-1", 4, contract.spec_digest(spec))
    )
    assert (
        job["metadata"]["namespace"] == "team"
        and job["spec"]["template"]["spec"]["containers"][0]["image"] == "local/t:dev"
    )
    bad = tmp_path / "bad.yaml"
    doc = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    doc["spec"]["training"]["loss"] = "CoSENT"
    bad.write_text(yaml.safe_dump(doc))
    out, err = io.StringIO(), io.StringIO()
    assert render_file(_args(str(bad)), out, err) == 1
    assert f"{bad}: spec.training.loss:" in err.getvalue() and out.getvalue() == ""


def test_settings_from_env() -> None:
    s = Settings.from_env({"EFT_WATCH_NAMESPACES": "a, b", "EFT_DEFAULT_QUEUE_NAME": "q", "EFT_METRICS_PORT": "9000"})
    assert (
        s.watch_namespaces == ("a", "b")
        and not s.clusterwide
        and s.default_queue_name == "q"
        and s.metrics_port == 9000
    )
    assert Settings.from_env({}).clusterwide and Settings.from_env({}).standalone
    with pytest.raises(SettingsError, match="EFT_HEALTH_PORT"):
        Settings.from_env({"EFT_HEALTH_PORT": "http"})


def test_llm_api_key_and_prompt_reach_the_job_by_reference_only() -> None:
    """The Job names the llm Secret and ConfigMap (secretKeyRef, configMapKeyRef); no key enters the run config."""
    doc = yaml.safe_load((REPO / "examples" / "documents-llm.yaml").read_text())
    doc["spec"]["data"]["generate"]["generator"]["llm"]["promptConfigMap"] = {"name": "prompts"}
    meta, spec = parse_resource(doc)
    owner = Owner.of("team", meta.resolved_name, "11111111-2222-3333-4444-555555555555", 1, spec)
    docs = list(render_children(owner, spec, SETTINGS))
    job = next(d for d in docs if d["kind"] == "Job")
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    key = env[contract.LLM_API_KEY_ENV]["valueFrom"]["secretKeyRef"]
    assert key == {"name": "vllm-api-key", "key": "apiKey"}
    assert env[contract.LLM_PROMPT_ENV]["valueFrom"]["configMapKeyRef"] == {"name": "prompts", "key": "prompt"}
    assert "value" not in env[contract.LLM_API_KEY_ENV]  # a reference only: the operator never holds the key
    offline = _render(REPO / "examples" / "documents-offline.yaml")
    names = [
        e["name"] for d in offline if d["kind"] == "Job" for e in d["spec"]["template"]["spec"]["containers"][0]["env"]
    ]
    assert contract.LLM_API_KEY_ENV not in names


def test_baseline_endpoint_keys_reach_the_job_by_reference_only() -> None:
    """Each endpoint baseline's apiKeySecret becomes a secretKeyRef env var named by its index; no key value."""
    docs = _render(REPO / "examples" / "baselines-and-merge.yaml")
    job = next(d for d in docs if d["kind"] == "Job")
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert contract.baseline_key_env(0) not in env  # a model baseline has no key
    ref = env[contract.baseline_key_env(1)]
    assert ref == {
        "name": "EFT_BASELINE_1_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "embeddings-api-key", "key": "apiKey"}},
    }
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    assert "embeddings-api-key" in config["data"][contract.RUN_CONFIG_KEY]  # the Secret's name, never its value


def test_a_re_gate_run_config_names_the_model_to_reuse() -> None:
    doc = yaml.safe_load((REPO / "examples" / "guards.yaml").read_text())
    meta, spec = parse_resource(doc)
    owner = Owner.of("team", meta.resolved_name, "11111111-2222-3333-4444-555555555555", 2, spec)
    reuse = contract.ModelReuse(run_id="r1", uri="s3://eft-models/team/support-search/r1/model/")
    configmap, _ = render_children(owner, spec, SETTINGS, reuse)
    cfg = contract.RunConfig.from_json(configmap["data"][contract.RUN_CONFIG_KEY])
    assert cfg.reuse_model_from == reuse
    plain, _ = render_children(owner, spec, SETTINGS)
    assert "reuseModelFrom" not in plain["data"][contract.RUN_CONFIG_KEY]
