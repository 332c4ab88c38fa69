"""The evidence of a run, after the fine-tuned model is measured: the merge (``training.merge``), the baselines'
leaderboard (``evaluation.baselines``, ``gate.mustBeat``), the per-query movers, and the gate's verdict as
``gate.decideBy`` says. The run pipeline calls :func:`merge_stage`, :func:`baselines_stage` and
:func:`verdict`; the figures come from the pure modules (:mod:`eft_trainer.merge`, :mod:`eft_trainer.baselines`,
:mod:`eft_trainer.per_query`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eft_api.contract import ModelReuse, RunConfig
from eft_api.spec import Method
from eft_trainer import baselines as B
from eft_trainer import guards as G
from eft_trainer import merge as M
from eft_trainer.evaluation import EvalResult
from eft_trainer.per_query import markdown as movers_md
from eft_trainer.per_query import movers

log = logging.getLogger("eft_trainer.evidence")

#: Measures a model on the evaluation set (every dimension) and on each guard set (at the gate's dimension).
Measure = Callable[[Any], tuple[EvalResult, list[EvalResult]]]


@dataclass
class Measured:
    """A model and its figures: evaluation set, guards (figures and verdicts), gate verdict."""

    model: Any
    tuned: EvalResult
    guards_tuned: list[EvalResult]
    guard_results: list[dict[str, Any]] = field(default_factory=list)
    gain_ok: bool = True


def base_state(model: Any, cfg: RunConfig) -> dict[str, Any] | None:
    """A copy of the base weights when a merge will need them (not for queryAdapter: its base is frozen)."""
    spec = cfg.spec
    if not spec.training.merge.enabled or spec.training.method is Method.QUERY_ADAPTER:
        return None
    state: dict[str, Any] = copy.deepcopy(model.state_dict())
    return state


def merge_stage(
    cfg: RunConfig,
    merged: Callable[[float], Any],
    trained: Measured,
    measure: Measure,
    judged: Callable[[Measured], Measured],
    pdim: int,
) -> tuple[Measured, dict[str, Any] | None]:
    """Measure merge ratios (given or searched; ``merged(ratio)`` makes the model) and return the chosen model's
    figures and the report's section.

    ``trained`` is the fine-tuned model already measured and judged (ratio 1). When no ratio passes, the
    fine-tuned model stays (the run is rejected as without merging) and the section names the best trade-off."""
    spec = cfg.spec
    if not spec.training.merge.enabled:
        return trained, None
    pm = spec.evaluation.primary_metric
    points: list[M.Point] = []
    by_ratio: dict[float, Measured] = {}
    given = spec.training.merge.ratios
    while (ratio := M.next_ratio(points, given)) is not None:
        if ratio == 1.0:
            m = trained
        else:
            model = merged(ratio)
            tuned, guards_tuned = measure(model)
            m = judged(Measured(model, tuned, guards_tuned))
        by_ratio[ratio] = m
        points.append(_point(ratio, m, pm, pdim))
        log.info("merge ratio %g: %s %.4f; guards %s; gate %s", ratio, pm, points[-1].primary,
                 "pass" if points[-1].guards_passed else "fail", "pass" if m.gain_ok else "fail")  # fmt: skip
    chosen = M.choose(points)
    section = {
        "ratios": given or "searched",
        "points": [p.to_json() for p in sorted(points, key=lambda p: p.ratio)],
        "chosen": chosen.ratio if chosen else None,
        "summary": M.describe(points, chosen, pm),
        "primaryMetric": pm,
        "dimension": pdim,
    }
    log.info("%s", section["summary"])
    return (by_ratio[chosen.ratio] if chosen else trained), section


def _point(ratio: float, m: Measured, pm: str, pdim: int) -> M.Point:
    return M.Point(
        ratio=ratio,
        primary=m.tuned.metrics[pdim][pm],
        guards={r["name"]: r["finetuned"] for r in m.guard_results},
        guards_passed=not G.failed(m.guard_results),
        gate_passed=m.gain_ok,
    )


def baselines_stage(
    cfg: RunConfig,
    sets: dict[str, Any],
    load: Callable[[int], Any],
    evaluate: Callable[[Any, str, Any], EvalResult],
    cache: B.EmbeddingsCache,
) -> list[B.Measured]:
    """Each baseline measured on every set (``eval`` and each guard): ``load(i)`` loads model baseline i,
    ``evaluate(model, set name, irset)`` measures it."""
    out = []
    k_values = cfg.spec.evaluation.k_values
    for i, b in enumerate(cfg.spec.evaluation.baselines):
        if b.endpoint is not None:
            out.append(B.measure_endpoint(b, i, sets, k_values, cache))
        else:
            out.append(B.measure_model(b, lambda i=i: load(i), evaluate, sets))  # type: ignore[misc]
        log.info("baseline %s measured%s", b.name, f" with an error: {out[-1].error}" if out[-1].error else "")
    return out


def per_query_section(
    cfg: RunConfig,
    irset: Any,
    base: EvalResult,
    tuned: EvalResult,
    guard_sets: Sequence[Any],
    guards_base: Sequence[EvalResult],
    guards_tuned: Sequence[EvalResult],
    pdim: int,
) -> dict[str, Any]:
    """The movers of the evaluation set and of each guard, at the gate's dimension."""
    ev = cfg.spec.evaluation
    pm = ev.primary_metric
    out = {"eval": movers(irset, base, tuned, pdim, pm, ev.k_values)}
    for gs, b, t in zip(guard_sets, guards_base, guards_tuned, strict=True):
        out[gs.guard.name] = movers(gs.irset, b, t, pdim, pm, ev.k_values)
    return out


def summary(merge: dict[str, Any] | None, board: dict[str, Any] | None, reused: ModelReuse | None) -> str:
    """The termination message's words for the merge, the baselines and a reuse ('' when none)."""
    out = ""
    if merge is not None:
        out += f"; {merge['summary']}"
    for b in B.short_form(board) if board else []:
        if b.get("error"):
            out += f"; baseline {b['name']} could not be measured"
        else:
            out += f"; baseline {b['name']} {b['primary']:.4f} (fine-tuned {b['finetunedMinus']:+.4f})"
    if reused is not None:
        out += f"; re-gated the trained model of run {reused.run_id} (no training)"
    return out


def extra_plots(report: dict[str, Any], folder: Path) -> list[str]:
    """The leaderboard's and the merge curve's plots, beside the report (their file names)."""
    names = []
    if report.get("leaderboard"):
        B.plot(report["leaderboard"], folder / "leaderboard.png")
        names.append("leaderboard.png")
    if report.get("merge"):
        merge_plot(report["merge"], folder / "merge.png")
        names.append("merge.png")
    return names


def merge_plot(section: dict[str, Any], path: Path) -> Path:
    """The primary metric on the evaluation set and on each guard, per ratio; the chosen ratio marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = section["points"]
    ratios = [p["ratio"] for p in pts]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ratios, [p["primary"] for p in pts], "o-", label="evaluation set")
    for name in pts[0]["guards"] if pts else []:
        ax.plot(ratios, [p["guards"][name] for p in pts], "s--", label=f"guard {name}")
    if section["chosen"] is not None:
        ax.axvline(section["chosen"], color="green", linestyle=":", label=f"chosen {section['chosen']:g}")
    ax.set_xlabel("merge ratio (0 = base, 1 = fine-tuned)")
    ax.set_ylabel(section["primaryMetric"])
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def markdown(report: dict[str, Any]) -> list[str]:
    """The report's sections for the leaderboard, the merge curve and the per-query movers."""
    lines: list[str] = []
    board = report.get("leaderboard")
    if board:
        lines += [
            "## Leaderboard",
            "",
            f"{board['primaryMetric']}; the last columns: fine-tuned minus the row (95% CI).",
            "",
        ]
        for set_name, rows in board["sets"].items():
            lines += [
                f"### {set_name}",
                "",
                "| model | kind | dimension | primary | fine-tuned minus (95% CI) |",
                "|---|---|---|---|---|",
            ]
            for r in rows:
                d = r["finetunedMinus"]
                lines.append(f"| {r['name']} | {r['kind']} | {r['dimension']} | {r['primary']:.4f} | "
                             f"{d['gain']:+.4f} ({d['low']:+.4f} .. {d['high']:+.4f}) |")  # fmt: skip
            lines.append("")
        lines += [f"- baseline {n} could not be measured: {e}" for n, e in board["failed"].items()]
        lines += [f"- cost of {n}: {c}" for n, c in board["cost"].items()]
        lines.append("")
    merge = report.get("merge")
    if merge:
        lines += ["## Merge (WiSE-FT)", "", "![merge curve](merge.png)", "", merge["summary"], ""]
        guards = list(merge["points"][0]["guards"]) if merge["points"] else []
        head = ["ratio", "evaluation set", *(f"guard {g}" for g in guards), "guards", "gate"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for p in merge["points"]:
            cells = [f"{p['ratio']:g}", f"{p['primary']:.4f}", *(f"{p['guards'][g]:.4f}" for g in guards)]
            cells += ["pass" if p["guardsPassed"] else "fail", "pass" if p["gatePassed"] else "fail"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if report.get("perQuery"):
        lines += ["## Per-query evidence", ""]
    for name, section in (report.get("perQuery") or {}).items():
        lines += movers_md(name, section, report["primaryMetric"])
    return lines
