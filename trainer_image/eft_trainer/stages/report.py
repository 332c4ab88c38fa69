"""Report: everything the run measured and how, as report.json's content (:func:`eft_trainer.report.build_report`
and the sections of the optional stages), with the gate's verdict.

In: the outputs of the stages before. Out: the report (published by the publish stage)."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from typing import Any

from eft_api.contract import ModelReuse
from eft_api.report import Report
from eft_trainer import evidence as EV
from eft_trainer import report as R
from eft_trainer.evaluation import EvalResult
from eft_trainer.methods import Trained, TrainingMethod
from eft_trainer.pretrain import Pretrained
from eft_trainer.publish import index_info
from eft_trainer.report import camel_keys, teacher_figures
from eft_trainer.stages.check import BaseModel, Checked
from eft_trainer.stages.context import RunContext
from eft_trainer.stages.gate import Verdict
from eft_trainer.stages.measure import Measured
from eft_trainer.stages.source import Source


@dataclass
class Results:
    """What the stages made, as the report stage reads it."""

    source: Source
    base_model: BaseModel
    checked: Checked
    method: TrainingMethod
    pretrained: Pretrained | None
    trained: Trained
    base: Measured
    tuned: Measured
    teacher: EvalResult | None
    verdict: Verdict
    #: The leaderboard of evaluation.baselines, the merge section, the earlier run whose model was re-gated.
    board: dict[str, Any] | None = None
    merge: dict[str, Any] | None = None
    reused: ModelReuse | None = None
    #: The model published (the merged one, when a merge chose a ratio below 1).
    model: Any = None

    @property
    def reindex_required(self) -> bool:
        """Pre-training changes the document side too: an existing index must be re-embedded."""
        return self.method.reindex_required or self.pretrained is not None


def hardware() -> dict[str, Any]:
    import torch  # heavy: the report stage runs after training, when torch is loaded anyway

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpus"] = torch.cuda.device_count()
    return info


def run_config_section(ctx: RunContext, r: Results) -> dict[str, Any]:
    """The report's ``config``: the run's identity, method, settings and lineage."""
    cfg, spec = ctx.cfg, ctx.cfg.spec
    return {
        "name": cfg.run.name,
        "namespace": cfg.run.namespace,
        "runId": cfg.run.run_id,
        "method": r.method.name,
        "loss": spec.training.loss.value,
        "format": spec.data.train.format.value,
        "training": spec.training.model_dump(mode="json", by_alias=True),
        "evaluation": spec.evaluation.model_dump(mode="json", by_alias=True, exclude_none=True),
        **r.base_model.lineage,
    }


def evidence_sections(ctx: RunContext, r: Results, report: dict[str, Any]) -> None:
    """The per-query movers, the leaderboard, the merge curve (its ratio for the manifest and card), a reuse."""
    c = r.checked
    report["perQuery"] = EV.per_query_section(
        ctx.cfg, c.irset, r.base.result, r.tuned.result, c.guard_sets, r.base.guards, r.tuned.guards, r.base.dimension
    )
    if r.board is not None:
        report["leaderboard"] = r.board
    if r.merge is not None:
        report["merge"] = r.merge
        report["index"] = report["index"].model_copy(update={"merge_ratio": r.merge["chosen"] or 1.0})
    if r.reused is not None:
        report["reusedModelFrom"] = {"runId": r.reused.run_id, "uri": r.reused.uri}


def run(ctx: RunContext, r: Results) -> Report:
    """The report as :class:`eft_api.report.Report` (checked against its schema here, before publishing)."""
    spec = ctx.cfg.spec
    pm, pdim = spec.evaluation.primary_metric, r.base.dimension
    stats = r.trained.stats
    report = R.build_report(
        config=run_config_section(ctx, r),
        data=r.checked.stats,
        base=r.base.result.metrics,
        tuned=r.tuned.result.metrics,
        primary_metric=pm,
        primary_dim=pdim,
        bootstrap=r.verdict.bootstrap,
        timings=ctx.timings,
        training={**camel_keys(asdict(stats)), "pairsPerSecond": stats.samples_per_second, **r.trained.details},
        hardware={**hardware(), "processes": ctx.world.size},
    )
    report["index"] = index_info(r.trained.model, sorted(r.base.result.metrics, reverse=True), r.reindex_required)
    evidence_sections(ctx, r, report)
    if r.pretrained is not None:
        report["pretrain"] = r.pretrained.section
    if r.source.documents:
        report["generation"] = r.source.documents.generated.report_section()
    if r.verdict.guards:
        report["guards"] = r.verdict.guards
    if r.teacher is not None:
        report["teacher"] = teacher_figures(r.teacher, r.tuned.result, pm, pdim, spec.training.seed)
    # The verdict is published with the report, so that a rerun of a published run returns the same outcome.
    report["promotion"] = {"rejected": r.verdict.rejected, "reasons": r.verdict.reasons}
    return Report.model_validate(report)
