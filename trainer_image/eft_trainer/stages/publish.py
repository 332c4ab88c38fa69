"""Publish: the model (unless the gate rejected it), then the report, then the manifest (seam 3); or, for a run
whose manifest is already there, nothing at all (:func:`already_published`).

In: the report, the trained model and the verdict. Out: the artifacts' URIs."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from eft_api.contract import (
    PUBLISHED_ADAPTER_DIR,
    PUBLISHED_MANIFEST,
    PUBLISHED_MODEL_DIR,
    PUBLISHED_PLOT,
    PUBLISHED_REPORT_JSON,
    PUBLISHED_REPORT_MD,
    Artifacts,
    Headline,
    Reason,
    RunConfig,
    TerminationMessage,
)
from eft_api.report import Report
from eft_trainer import evidence as EV
from eft_trainer import methods
from eft_trainer.errors import TrainerError
from eft_trainer.publish import manifest_exists, model_card, publish
from eft_trainer.report import plot, render_markdown
from eft_trainer.stages.context import RunContext
from eft_trainer.stages.outcome import headline_of, index_summary
from eft_trainer.storage import S3Uri, Store

log = logging.getLogger("eft_trainer")


def _save_model(model: Any | None, report: Report, out: Path, method: methods.TrainingMethod | None) -> list[str]:
    """The model folder with its card (an empty folder for a rejected model); the method's extra folders."""
    mdir = out / "model"
    if model is None:
        mdir.mkdir(parents=True)
        return []
    model.save(str(mdir))
    (mdir / "README.md").write_text(model_card(report))
    return method.save_extras(model, out / "extras") if method is not None else []


def publish_run(
    cfg: RunConfig,
    storage: Store,
    model: Any | None,
    report: Report,
    work: Path,
    stamp: Callable[[], None] = lambda: None,
    method: methods.TrainingMethod | None = None,
) -> tuple[dict[str, Any], Artifacts]:
    """Publish the model, then the report, then the manifest; ``stamp()`` runs just before the report is
    written (after the model's upload), to complete its timings."""
    out = work / "publish"
    if out.exists():
        shutil.rmtree(out)
    extras = _save_model(model, report, out, method)

    def write_report() -> Path:
        stamp()
        rdir = out / "report"
        rdir.mkdir(parents=True)
        (rdir / PUBLISHED_REPORT_JSON).write_text(report.to_json())
        evidence = "\n".join(EV.markdown(report.as_dict()))  # leaderboard, merge curve, per-query movers
        (rdir / PUBLISHED_REPORT_MD).write_text(render_markdown(report, PUBLISHED_PLOT) + "\n" + evidence)
        plot(report, rdir / PUBLISHED_PLOT)
        EV.extra_plots(report.as_dict(), rdir)
        return rdir

    prefix = S3Uri.parse(cfg.run.output_prefix)
    extra_dirs = {name: out / "extras" / name for name in extras}
    index = report.index if model is not None else None
    manifest = publish(storage, prefix, out / "model", write_report, cfg.run.run_id, extra_dirs=extra_dirs, index=index)
    arts = Artifacts(
        model=str(prefix.join(PUBLISHED_MODEL_DIR)) if model is not None else None,
        report=str(prefix.join(PUBLISHED_REPORT_JSON)),
        manifest=str(prefix.join(PUBLISHED_MANIFEST)),
        adapter=str(prefix.join(PUBLISHED_ADAPTER_DIR)) if PUBLISHED_ADAPTER_DIR in extras else None,
    )
    return manifest, arts


def _published_figures(storage: Store, prefix: S3Uri) -> tuple[Headline | None, list[str] | None, Any]:
    """The headline, the rejection reasons (None: promoted) and the index summary of a published report."""
    try:
        rep = Report.from_json(storage.get_bytes(prefix.join(PUBLISHED_REPORT_JSON)))
    except (TrainerError, ValidationError):
        return None, None, None
    rejected = list(rep.promotion.reasons) if rep.promotion is not None and rep.promotion.rejected else None
    return headline_of(rep), rejected, index_summary(rep.index)


def already_published(cfg: RunConfig, storage: Store) -> TerminationMessage | None:
    """The outcome of a run that is already published (its manifest exists): it is never overwritten."""
    prefix = S3Uri.parse(cfg.run.output_prefix)
    if not manifest_exists(storage, prefix):
        return None
    log.info("run %s is already published under %s; not overwriting", cfg.run.run_id, prefix)
    headline, rejected, index = _published_figures(storage, prefix)
    done = f"already published under {prefix}"
    if rejected is not None:
        outcome, reason, message = "Failed", Reason.PROMOTION_REJECTED, f"{done}, rejected: {'; '.join(rejected)}"
    else:
        outcome, reason, message = "Succeeded", Reason.SUCCEEDED, done
    return TerminationMessage(
        outcome=outcome,
        reason=reason,
        message=message,
        run_id=cfg.run.run_id,
        headline=headline,
        index=index,
        artifacts=Artifacts(
            model=str(prefix.join(PUBLISHED_MODEL_DIR)) if rejected is None else None,
            report=str(prefix.join(PUBLISHED_REPORT_JSON)),
            manifest=str(prefix.join(PUBLISHED_MANIFEST)),
        ),
    )


def keep_trained(ctx: RunContext, trained: Any, keep: bool) -> str | None:
    """Where the trained weights (before any merge) stay for a later re-gate, when model/ will not hold them (a
    merge, a rejection): the reused run's, or ``checkpoints/trained-model/`` (uploaded before the manifest)."""
    reused = ctx.cfg.reuse_model_from
    if reused is not None:
        return reused.uri
    if not keep:
        return None
    prefix = S3Uri.parse(ctx.cfg.run.output_prefix).join(TRAINED_MODEL_DIR)
    local = ctx.work / "trained-model"
    if local.exists():
        shutil.rmtree(local)
    trained.save(str(local))
    for f in sorted(p for p in local.rglob("*") if p.is_file()):
        ctx.storage.upload(f, prefix.join(f.relative_to(local).as_posix()))
    log.info("kept the trained model (before merging, or rejected) under %s", prefix)
    return str(prefix)


#: Under a run's prefix: its trained weights when model/ does not hold them.
TRAINED_MODEL_DIR = "checkpoints/trained-model/"


def run(
    ctx: RunContext,
    report: Report,
    model: Any,
    method: methods.TrainingMethod,
    rejected: bool,
    trained: Any = None,
) -> Artifacts:
    """Publish ``model`` (the merged one, if merged); ``trained``, the weights before any merge, is kept too
    where model/ will not hold it."""
    kept = keep_trained(ctx, trained if trained is not None else model, rejected or trained is not model)
    with ctx.stage("publish", timed=False) as t0:

        def stamp() -> None:
            """Publishing up to the report's own upload (the model's upload included) and the run's total."""
            report.timings["publish"] = time.perf_counter() - t0
            report.timings["total"] = time.perf_counter() - ctx.started

        _, arts = publish_run(ctx.cfg, ctx.storage, None if rejected else model, report, ctx.work, stamp, method)
        return arts.model_copy(update={"trained_model": kept or arts.model})
