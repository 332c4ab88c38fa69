"""Measure: the retrieval metrics of a model on the evaluation set at every dimension, and on each guard set at
the gate's dimension (the base model, the fine-tuned one, the teacher of a distillation).

In: a model and :class:`~eft_trainer.stages.check.Checked`. Out: :class:`Measured`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eft_api.contract import RunConfig
from eft_trainer import data as D
from eft_trainer.evaluation import EvalResult, dimensions, evaluate_model
from eft_trainer.guards import GuardSet
from eft_trainer.methods import Trained
from eft_trainer.models import embedding_dim
from eft_trainer.stages.check import Checked
from eft_trainer.stages.context import RunContext

log = logging.getLogger("eft_trainer")


@dataclass
class Measured:
    result: EvalResult
    #: The dimension the gate and the headline use (the gate's, else the full one).
    dimension: int
    #: One result per guard set, at ``dimension`` only.
    guards: list[EvalResult] = field(default_factory=list)


def evaluate(model: Any, irset: D.IRSet, cfg: RunConfig, corpus_embeddings: Any = None) -> EvalResult:
    """Measure ``model``; ``corpus_embeddings`` (of the same document side) are reused instead of recomputed."""
    ev = cfg.spec.evaluation
    dims = dimensions(embedding_dim(model), cfg.spec.training.matryoshka_dims)
    return evaluate_model(
        model, irset, dims, ev.k_values, batch_size=ev.batch_size, progress=False, corpus_embeddings=corpus_embeddings
    )


def evaluate_guards(model: Any, guard_sets: Sequence[GuardSet], dim: int, cfg: RunConfig) -> list[EvalResult]:
    """Each guard set measured at ``dim`` only (the gate's dimension or the full one)."""
    ev = cfg.spec.evaluation
    return [
        evaluate_model(model, gs.irset, [dim], ev.k_values, batch_size=ev.batch_size, progress=False)
        for gs in guard_sets
    ]


def primary_dimension(cfg: RunConfig, metrics: dict[int, dict[str, float]]) -> int:
    """The gate's dimension when the model has it, else the full one. Pure."""
    gate = cfg.spec.evaluation.gate
    return gate.dimension if gate and gate.dimension and gate.dimension in metrics else max(metrics)


def headline_str(metrics: dict[int, dict[str, float]], pm: str) -> str:
    return ", ".join(f"{d} dims {pm}={m[pm]:.4f}" for d, m in metrics.items())


def base(ctx: RunContext, model: Any, checked: Checked) -> Measured:
    with ctx.stage("evaluate-base"):
        result = evaluate(model, checked.irset, ctx.cfg)
        ctx.progress.record_eval("base", result.metrics)
        pdim = primary_dimension(ctx.cfg, result.metrics)
        guards = evaluate_guards(model, checked.guard_sets, pdim, ctx.cfg)
    log.info("base model: %s", headline_str(result.metrics, ctx.cfg.spec.evaluation.primary_metric))
    return Measured(result, pdim, guards)


def finetuned(ctx: RunContext, trained: Trained, checked: Checked, before: Measured, reuse: bool) -> Measured:
    """``reuse``: the method left the document side alone, so the base model's corpus embeddings are reused."""
    with ctx.stage("evaluate-finetuned"):
        embeddings = before.result.corpus_embeddings if reuse else None
        result = evaluate(trained.model, checked.irset, ctx.cfg, corpus_embeddings=embeddings)
        checked.stats["corpusEmbeddingsReused"] = embeddings is not None
        ctx.progress.record_eval("finetuned", result.metrics)
        guards = evaluate_guards(trained.model, checked.guard_sets, before.dimension, ctx.cfg)
    log.info("fine-tuned model: %s", headline_str(result.metrics, ctx.cfg.spec.evaluation.primary_metric))
    return Measured(result, before.dimension, guards)


def teacher(ctx: RunContext, trained: Trained, checked: Checked) -> EvalResult | None:
    """The method's reference model (distillation's teacher) on the same evaluation, if it has one."""
    if trained.reference is None:
        return None
    with ctx.stage("evaluate-teacher"):
        result = evaluate(trained.reference, checked.irset, ctx.cfg)
    log.info("teacher: %s", headline_str(result.metrics, ctx.cfg.spec.evaluation.primary_metric))
    return result
