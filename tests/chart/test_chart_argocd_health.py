"""The Argo CD health check (Lua) against its fixtures, run the way Argo CD runs it; kstatus reads the same status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_render import CHART_DIR
from lupa import lua51, lua54

from eft_api.schema import structural_problems

HEALTH_LUA = (CHART_DIR / "files" / "argocd" / "health.lua").read_text(encoding="utf-8")
FIXTURES = Path(__file__).parent / "fixtures" / "argocd"
CASES: list[dict[str, Any]] = yaml.safe_load((FIXTURES / "health_test.yaml").read_text(encoding="utf-8"))["tests"]
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
#: How the two readings correspond for what the operator writes.
ARGO_TO_KSTATUS = {"Healthy": "Current", "Degraded": "Failed", "Progressing": "InProgress", "Suspended": "InProgress"}
#: Fixtures kstatus cannot read like Argo CD: no status yet (kstatus says Current for an object without
#: conditions), and conditions older than status.observedGeneration (kstatus ignores per-condition generations).
KSTATUS_BLIND = {"testdata/progressing_new.yaml", "testdata/progressing_stale_conditions.yaml"}


def load(case: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((FIXTURES / case["inputPath"]).read_text(encoding="utf-8"))
    return doc


def run_health_check(obj: dict[str, Any], runtime: Any = lua51) -> dict[str, str]:
    """Run health.lua as Argo CD does: a chunk with the resource (JSON-decoded) as global ``obj``."""
    lua = runtime.LuaRuntime(unpack_returned_tuples=True)
    decoded = json.loads(json.dumps(obj))  # Argo CD hands the script the object as JSON decodes it.
    lua.globals().obj = lua.table_from(decoded, recursive=True)
    hs = lua.execute(HEALTH_LUA)
    return {"status": hs["status"], "message": hs["message"]}


def kstatus(obj: dict[str, Any]) -> str:
    """sigs.k8s.io/cli-utils kstatus for a custom resource (status/generic.go): generation, Reconciling, Stalled."""
    if obj["metadata"].get("deletionTimestamp"):
        return "Terminating"
    status = obj.get("status") or {}
    observed = status.get("observedGeneration")
    if observed is not None and observed != obj["metadata"].get("generation"):
        return "InProgress"
    conditions = {c["type"]: c for c in status.get("conditions", [])}
    if conditions.get("Reconciling", {}).get("status") == "True":
        return "InProgress"
    if conditions.get("Stalled", {}).get("status") == "True":
        return "Failed"
    return "Current"


def test_fixtures_cover_every_health_status() -> None:
    assert {c["healthStatus"]["status"] for c in CASES} == {"Healthy", "Progressing", "Degraded", "Suspended"}


@pytest.mark.parametrize("case", CASES, ids=[c["inputPath"] for c in CASES])
def test_fixtures_are_resources_the_crd_accepts(case: dict[str, Any]) -> None:
    obj = load(case)
    assert obj["apiVersion"] == "finetune.eft.dev/v1alpha1" and obj["kind"] == "EmbeddingFinetune"
    assert structural_problems(obj) == []


@pytest.mark.parametrize("runtime", [lua51, lua54], ids=["lua5.1", "lua5.4"])
@pytest.mark.parametrize("case", CASES, ids=[c["inputPath"] for c in CASES])
def test_health_check_matches_fixture(case: dict[str, Any], runtime: Any) -> None:
    hs = run_health_check(load(case), runtime)
    assert hs["status"] in ARGO_STATUSES
    assert hs == case["healthStatus"]


@pytest.mark.parametrize("case", CASES, ids=[c["inputPath"] for c in CASES])
def test_kstatus_reads_the_same_status(case: dict[str, Any]) -> None:
    obj = load(case)
    assert kstatus(obj) == case["kstatus"]
    if case["inputPath"] not in KSTATUS_BLIND:
        assert ARGO_TO_KSTATUS[case["healthStatus"]["status"]] == case["kstatus"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        # A Stalled condition from an older generation does not make the new generation Degraded.
        (lambda o: o["status"]["conditions"][2].update(observedGeneration=0), "Progressing"),
        # Suspending a failed run keeps it Degraded: suspension does not hide a failure.
        (lambda o: o["spec"].setdefault("runPolicy", {}).update(suspend=True), "Degraded"),
        # Without conditions at all, the operator has not reported on this generation.
        (lambda o: o["status"].pop("conditions"), "Progressing"),
        # metadata.generation missing (as in some dry-run diffs): judged by the conditions.
        (lambda o: o["metadata"].pop("generation"), "Degraded"),
    ],
)
def test_health_check_edge_cases(mutate: Any, expected: str) -> None:
    obj = load(next(c for c in CASES if c["inputPath"] == "testdata/degraded_oom.yaml"))
    mutate(obj)
    assert run_health_check(obj)["status"] == expected


def test_messages_never_empty() -> None:
    for case in CASES:
        obj = load(case)
        for cond in obj.get("status", {}).get("conditions", []):
            cond.pop("reason", None)
            cond.pop("message", None)
        hs = run_health_check(obj)
        assert hs["message"], case["inputPath"]


@pytest.mark.parametrize("runtime", [lua51, lua54], ids=["lua5.1", "lua5.4"])
@pytest.mark.parametrize(
    ("trainer_status", "suffix"),
    [
        (None, ""),  # the trainer has not reported yet
        ({"phase": "EvaluatingBase", "progressPercentage": 12}, " (EvaluatingBase 12%)"),
        ({"progressPercentage": 40.0, "estimatedRemainingSeconds": 0}, " (40%)"),
        ({"phase": "Training", "metrics": []}, ""),  # no percentage: nothing to say
    ],
)
def test_progressing_message_carries_the_runs_progress(
    trainer_status: dict[str, Any] | None, suffix: str, runtime: Any
) -> None:
    obj = load(next(c for c in CASES if c["inputPath"] == "testdata/progressing_running.yaml"))
    obj["status"].pop("trainerStatus")
    if trainer_status is not None:
        obj["status"]["trainerStatus"] = trainer_status
    hs = run_health_check(obj, runtime)
    assert hs == {"status": "Progressing", "message": "Running: Run g1-4f2a1 is training (epoch 1 of 1)" + suffix}
