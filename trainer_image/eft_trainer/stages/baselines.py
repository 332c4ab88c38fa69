"""Baselines (``spec.evaluation.baselines``): each model or embeddings endpoint measured on the evaluation set
and the guards like the base and the fine-tuned model, and the leaderboard against the fine-tuned model.

In: :class:`~eft_trainer.stages.check.Checked`, the base and fine-tuned
:class:`~eft_trainer.stages.measure.Measured`. Out: the leaderboard (None without baselines)."""

from __future__ import annotations

from typing import Any

from eft_trainer import baselines as B
from eft_trainer import data as D
from eft_trainer import evidence as EV
from eft_trainer.evaluation import EvalResult, evaluate_model
from eft_trainer.models import embedding_dim, load_model
from eft_trainer.stages.check import Checked
from eft_trainer.stages.context import RunContext
from eft_trainer.stages.measure import Measured, evaluate


def run(ctx: RunContext, checked: Checked, base: Measured, tuned: Measured) -> dict[str, Any] | None:
    cfg = ctx.cfg
    spec = cfg.spec
    if not spec.evaluation.baselines:
        return None
    names = [gs.guard.name for gs in checked.guard_sets]
    sets = {"eval": checked.irset, **{n: gs.irset for n, gs in zip(names, checked.guard_sets, strict=True)}}

    def load(i: int) -> Any:
        which = spec.evaluation.baselines[i].model
        return load_model(cfg, ctx.storage, ctx.own, which, f"spec.evaluation.baselines[{i}].model.base")[0]

    def measure(model: Any, set_name: str, irset: D.IRSet) -> EvalResult:
        if set_name == "eval":
            return evaluate(model, irset, cfg)
        ev = spec.evaluation
        return evaluate_model(model, irset, [embedding_dim(model)], ev.k_values, batch_size=ev.batch_size)

    with ctx.stage("baselines"):
        prefix = B.embeddings_prefix(spec.output.uri, cfg.run.namespace, cfg.run.name)
        measured = EV.baselines_stage(cfg, sets, load, measure, B.EmbeddingsCache(ctx.own, ctx.storage, prefix))
    base_sets = {"eval": base.result, **dict(zip(names, base.guards, strict=True))}
    tuned_sets = {"eval": tuned.result, **dict(zip(names, tuned.guards, strict=True))}
    return B.leaderboard(
        base_sets, tuned_sets, measured, spec.evaluation.primary_metric, base.dimension, spec.training.seed
    )
