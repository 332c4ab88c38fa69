"""Outcome: the termination message (seam 4: outcome, reason, the headline figures, the artifacts' URIs) and
the exit code of its class; for a failure, from the error (:func:`failure`).

In: the report, the verdict, the artifacts. Out: :class:`eft_api.contract.TerminationMessage`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from eft_api.contract import (
    EXIT_CODE_OF_REASON,
    TERMINATION_LOG,
    TERMINATION_LOG_ENV,
    Artifacts,
    ExitCode,
    GenerationSummary,
    Headline,
    IndexSummary,
    Reason,
    TerminationMessage,
)
from eft_trainer import guards as G
from eft_trainer.distributed import World
from eft_trainer.errors import OutOfMemory, TrainerError, redact
from eft_trainer.oom import OOM_ADVICE, is_oom
from eft_trainer.stages.context import RunContext
from eft_trainer.stages.gate import Verdict
from eft_trainer.stages.train import oom_fallback

log = logging.getLogger("eft_trainer")


def index_summary(index: dict[str, Any] | None) -> IndexSummary | None:
    if not index:
        return None
    return IndexSummary(
        reindex_required=index["reindexRequired"],
        dimension=index["embeddingDimension"],
        similarity=index["similarity"],
        normalized=index["normalized"],
    )


def figures(report: dict[str, Any], verdict: Verdict) -> str:
    """The run's figures in a line: the headline, the guards, the out-of-memory fallback, the teacher. Pure."""
    pm, pdim, h = report["primaryMetric"], report["primaryDimension"], report["headline"]
    text = f"{pm} at {pdim} dims {h['base']:.4f} -> {h['finetuned']:.4f} ({h['gain']:+.4f})"
    if verdict.guards:
        text += "; guards: " + "; ".join(G.summary(r) for r in verdict.guards)
    fallback = oom_fallback(report["training"].get("oomFallback"))
    if fallback is not None:
        text += (
            f"; out of memory before: trained with {fallback.to_loss} (mini-batch {fallback.mini_batch_size}) "
            f"instead of {fallback.from_loss} in attempt {fallback.attempt}"
        )
    if teacher := report.get("teacher"):
        text += f"; teacher {teacher['primary']:.4f} at {teacher['dimension']} dims"
    return text


def run(
    ctx: RunContext,
    report: dict[str, Any],
    verdict: Verdict,
    arts: Artifacts,
    generation: GenerationSummary | None = None,
) -> TerminationMessage:
    """The run's termination message: Succeeded, or Failed with PromotionRejected and the gate's reasons."""
    h = report["headline"]
    said = figures(report, verdict)
    if verdict.rejected:
        outcome, reason, message = "Failed", Reason.PROMOTION_REJECTED, "; ".join(verdict.reasons) + f" ({said})"
    else:
        ctx.progress.set_phase("done")
        outcome, reason, message = "Succeeded", Reason.SUCCEEDED, said
    return TerminationMessage(
        outcome=outcome,
        reason=reason,
        message=message,
        run_id=ctx.cfg.run.run_id,
        headline=Headline(
            primary_metric=report["primaryMetric"],
            dimension=report["primaryDimension"],
            base=h["base"],
            finetuned=h["finetuned"],
            gain=h["gain"],
        ),
        index=index_summary(report.get("index")),
        artifacts=arts,
        generation=generation,
        guards=[G.termination_figures(r) for r in verdict.guards] or None,
        oom_fallback=oom_fallback(report["training"].get("oomFallback")),
    )


def failure(exc: BaseException, run_id: str | None) -> TerminationMessage:
    """The termination message of a failure (pure): reason from the error class, message redacted."""
    reason: Reason
    if isinstance(exc, TrainerError):
        reason, message = exc.reason, exc.message
    elif is_oom(exc):
        e = OutOfMemory(f"out of memory: {OOM_ADVICE}")
        reason, message = e.reason, e.message
    else:
        reason, message = Reason.CRASHED, redact(f"{type(exc).__name__}: {str(exc)[:500]}")
    fallback = exc.fallback if isinstance(exc, OutOfMemory) else None
    return TerminationMessage(outcome="Failed", reason=reason, message=message, run_id=run_id, oom_fallback=fallback)


def exit_code(msg: TerminationMessage) -> int:
    """The exit code of the message's class; an out-of-memory failure that planned a fallback is retried."""
    if msg.outcome == "Failed" and msg.reason == Reason.OOM and msg.oom_fallback is not None:
        return int(ExitCode.OUT_OF_MEMORY_FALLBACK)
    try:
        return int(EXIT_CODE_OF_REASON[Reason(msg.reason)])
    except ValueError:
        return int(ExitCode.CRASHED)


def finish(msg: TerminationMessage, world: World | None = None) -> int:
    """Write the termination message (at most 4 KB; rank 0 only) and return the exit code of its class."""
    w = world or World()
    if w.main:
        path = os.environ.get(TERMINATION_LOG_ENV, TERMINATION_LOG)
        try:
            Path(path).write_text(msg.to_json())
        except OSError:
            log.warning("could not write the termination message to %s", path)
    level = logging.INFO if msg.outcome == "Succeeded" else logging.ERROR
    log.log(level, "run %s finished: %s: %s", msg.run_id, msg.reason, msg.message)
    return exit_code(msg)
