"""Outcome: the termination message (seam 4: outcome, reason, the headline figures, the artifacts' URIs) and
the exit code of its class; for a failure, from the error (:func:`failure`).

In: the report, the verdict, the artifacts. Out: :class:`eft_api.contract.TerminationMessage`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from eft_api.contract import (
    EXIT_CODE_OF_REASON,
    TERMINATION_LOG,
    TERMINATION_LOG_ENV,
    Artifacts,
    BaselineFigures,
    ExitCode,
    GenerationSummary,
    Headline,
    IndexSummary,
    ModelReuse,
    Reason,
    TerminationMessage,
)
from eft_api.report import IndexInfo, Report
from eft_trainer import baselines as B
from eft_trainer import evidence as EV
from eft_trainer import guards as G
from eft_trainer.distributed import World
from eft_trainer.errors import OutOfMemory, TrainerError, redact
from eft_trainer.oom import OOM_ADVICE, is_oom
from eft_trainer.stages.context import RunContext
from eft_trainer.stages.gate import Verdict
from eft_trainer.stages.train import oom_fallback

log = logging.getLogger("eft_trainer")


def index_summary(index: IndexInfo | None) -> IndexSummary | None:
    if index is None:
        return None
    return IndexSummary(
        reindex_required=index.reindex_required,
        dimension=index.embedding_dimension,
        similarity=index.similarity,
        normalized=index.normalized,
    )


def headline_of(report: Report) -> Headline:
    """The termination message's headline (the operator's status shows it) from the report's."""
    h = report.headline
    return Headline(
        primary_metric=report.primary_metric,
        dimension=report.primary_dimension,
        base=h.base,
        finetuned=h.finetuned,
        gain=h.gain,
    )


def figures(report: Report, verdict: Verdict) -> str:
    """The run's figures in a line: the headline, the guards, the out-of-memory fallback, the teacher. Pure."""
    pm, pdim, h = report.primary_metric, report.primary_dimension, report.headline
    text = f"{pm} at {pdim} dims {h.base:.4f} -> {h.finetuned:.4f} ({h.gain:+.4f})"
    if verdict.guards:
        text += "; guards: " + "; ".join(G.summary(r) for r in verdict.guards)
    fallback = oom_fallback(report.training.get("oomFallback"))
    if fallback is not None:
        text += (
            f"; out of memory before: trained with {fallback.to_loss} (mini-batch {fallback.mini_batch_size}) "
            f"instead of {fallback.from_loss} in attempt {fallback.attempt}"
        )
    if report.teacher is not None:
        text += f"; teacher {report.teacher.primary:.4f} at {report.teacher.dimension} dims"
    return text + EV.summary(report.merge, report.leaderboard, reused(report))


def reused(report: Report) -> ModelReuse | None:
    r = report.reused_model_from
    return ModelReuse(run_id=r.run_id, uri=r.uri) if r else None


def run(
    ctx: RunContext,
    report: Report,
    verdict: Verdict,
    arts: Artifacts,
    generation: GenerationSummary | None = None,
) -> TerminationMessage:
    """The run's termination message: Succeeded, or Failed with PromotionRejected and the gate's reasons."""
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
        headline=headline_of(report),
        index=index_summary(report.index),
        artifacts=arts,
        generation=generation,
        guards=[G.termination_figures(r) for r in verdict.guards] or None,
        oom_fallback=oom_fallback(report.training.get("oomFallback")),
        baselines=[BaselineFigures.model_validate(b) for b in B.short_form(report.leaderboard)]
        if report.leaderboard
        else None,
        merge_ratio=report.merge["chosen"] if report.merge else None,
        reused_model_from=report.reused_model_from.run_id if report.reused_model_from else None,
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
