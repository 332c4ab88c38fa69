"""Publish: the model (unless the gate rejected it), then the report, then the manifest (seam 3); or, for a run
whose manifest is already there, nothing at all (:func:`already_published`).

In: the report, the trained model and the verdict. Out: the artifacts' URIs."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
from eft_trainer import methods
from eft_trainer.errors import TrainerError
from eft_trainer.publish import manifest_exists, model_card, publish
from eft_trainer.report import plot, render_markdown
from eft_trainer.stages.context import RunContext
from eft_trainer.stages.outcome import index_summary
from eft_trainer.storage import S3Uri, Storage

log = logging.getLogger("eft_trainer")


def _save_model(
    model: Any | None, report: dict[str, Any], out: Path, method: methods.TrainingMethod | None
) -> list[str]:
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
    storage: Storage,
    model: Any | None,
    report: dict[str, Any],
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
        (rdir / PUBLISHED_REPORT_JSON).write_text(json.dumps(report, indent=2))
        (rdir / PUBLISHED_REPORT_MD).write_text(render_markdown(report, PUBLISHED_PLOT))
        plot(report, rdir / PUBLISHED_PLOT)
        return rdir

    prefix = S3Uri.parse(cfg.run.output_prefix)
    extra_dirs = {name: out / "extras" / name for name in extras}
    index = report.get("index") if model is not None else None
    manifest = publish(storage, prefix, out / "model", write_report, cfg.run.run_id, extra_dirs=extra_dirs, index=index)
    arts = Artifacts(
        model=str(prefix.join(PUBLISHED_MODEL_DIR)) if model is not None else None,
        report=str(prefix.join(PUBLISHED_REPORT_JSON)),
        manifest=str(prefix.join(PUBLISHED_MANIFEST)),
        adapter=str(prefix.join(PUBLISHED_ADAPTER_DIR)) if PUBLISHED_ADAPTER_DIR in extras else None,
    )
    return manifest, arts


def _published_figures(storage: Storage, prefix: S3Uri) -> tuple[Headline | None, list[str] | None, Any]:
    """The headline, the rejection reasons (None: promoted) and the index summary of a published report."""
    try:
        rep = json.loads(storage.get_bytes(prefix.join(PUBLISHED_REPORT_JSON)))
        promotion = rep.get("promotion") or {}
        rejected = [str(r) for r in promotion.get("reasons", [])] if promotion.get("rejected") else None
        h = rep["headline"]
        headline = Headline(
            primary_metric=rep["primaryMetric"],
            dimension=int(rep["primaryDimension"]),
            base=h["base"],
            finetuned=h["finetuned"],
            gain=h["gain"],
        )
        return headline, rejected, index_summary(rep.get("index"))
    except (TrainerError, KeyError, ValueError):
        return None, None, None


def already_published(cfg: RunConfig, storage: Storage | None) -> TerminationMessage | None:
    """The outcome of a run that is already published (its manifest exists): it is never overwritten."""
    if storage is None:
        return None
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


def run(
    ctx: RunContext, report: dict[str, Any], model: Any, method: methods.TrainingMethod, rejected: bool
) -> Artifacts:
    with ctx.stage("publish", timed=False) as t0:

        def stamp() -> None:
            """Publishing up to the report's own upload (the model's upload included) and the run's total."""
            report["timings"]["publish"] = time.perf_counter() - t0
            report["timings"]["total"] = time.perf_counter() - ctx.started

        if ctx.storage is not None:
            _, arts = publish_run(ctx.cfg, ctx.storage, None if rejected else model, report, ctx.work, stamp, method)
            return arts
        local = ctx.work / "published"
        model.save(str(local / "model"))
        stamp()
        return Artifacts(model=str(local / "model"))
