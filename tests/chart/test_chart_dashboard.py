"""The Grafana dashboard queries only the metric names of the contract and covers what the issue asks for."""

from __future__ import annotations

import json
import re
from typing import Any

from chart_render import CHART_DIR, one, scenario_objects

DASHBOARD: dict[str, Any] = json.loads((CHART_DIR / "files" / "grafana" / "dashboard.json").read_text(encoding="utf-8"))

#: Metric names fixed by the common contract (operator and trainer).
OPERATOR_METRICS = {
    "eft_reconciles_total",
    "eft_reconcile_errors_total",
    "eft_reconcile_duration_seconds",
    "eft_runs",
    "eft_run_duration_seconds",
    "eft_headline_metric",
    "eft_run_progress_percent",
    "eft_progress_read_failures_total",
}
TRAINER_METRICS = {
    "eft_trainer_step",
    "eft_trainer_epoch",
    "eft_trainer_loss",
    "eft_trainer_samples_per_second",
    "eft_trainer_eta_seconds",
    "eft_trainer_eval_metric",
    "eft_trainer_phase_info",
    "eft_trainer_max_steps",
}
HISTOGRAMS = {"eft_reconcile_duration_seconds", "eft_run_duration_seconds"}


def metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\b(eft_[a-z_]+)\b", expr))
    return {
        re.sub(r"_(bucket|sum|count)$", "", n) if re.sub(r"_(bucket|sum|count)$", "", n) in HISTOGRAMS else n
        for n in names
    }


def exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in DASHBOARD["panels"] for t in p["targets"]]


def test_every_query_uses_contract_metric_names_only() -> None:
    used: set[str] = set()
    for title, expr in exprs():
        names = metric_names(expr)
        assert names, f"{title}: {expr} queries no eft metric"
        assert names <= OPERATOR_METRICS | TRAINER_METRICS, (
            f"{title}: unknown {names - OPERATOR_METRICS - TRAINER_METRICS}"
        )
        assert expr.count("(") == expr.count(")"), f"{title}: unbalanced {expr}"
        for histogram in HISTOGRAMS & names:
            assert f"{histogram}_bucket" in expr and "histogram_quantile" in expr, (
                f"{title}: {histogram} must be read by buckets"
            )
        used |= names
    assert used >= OPERATOR_METRICS, f"no panel for {OPERATOR_METRICS - used}"


def test_panels_cover_states_durations_and_base_vs_finetuned() -> None:
    by_title = dict(exprs())
    assert "by (phase)" in by_title["Runs by phase"]
    assert "eft_run_duration_seconds_bucket" in by_title["Run duration"]
    headline = by_title["Base vs fine-tuned headline metric"]
    assert "eft_headline_metric" in headline and "model" in headline and "name" in headline
    gain = by_title["Gain per resource"]
    assert 'model="finetuned"' in gain and 'model="base"' in gain


def test_progress_panel_reads_the_same_figure_as_the_progress_column() -> None:
    by_title = dict(exprs())
    assert "eft_run_progress_percent" in by_title["Run progress"] and "name" in by_title["Run progress"]
    panel = next(p for p in DASHBOARD["panels"] if p["title"] == "Run progress")
    assert "status.trainerStatus.progressPercentage" in panel["description"]
    assert panel["fieldConfig"]["defaults"]["max"] == 100


def test_dashboard_is_well_formed() -> None:
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in DASHBOARD["templating"]["list"]}
    for panel in DASHBOARD["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        for var in re.findall(r"\$(\w+)", json.dumps(panel["targets"])):
            assert var in variables | {"__rate_interval", "__interval"}, var
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24


def test_config_map_carries_the_dashboard_file() -> None:
    cm = one(scenario_objects("integrations"), "ConfigMap")
    (text,) = cm["data"].values()
    assert json.loads(text) == DASHBOARD
