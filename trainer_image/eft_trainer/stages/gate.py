"""Gate: is the fine-tuned model good enough to publish as the run's result? The primary metric's gain against
``spec.evaluation.gate.minGain``, and every guard set against its ``maxDrop``.

In: the base and fine-tuned :class:`~eft_trainer.stages.measure.Measured`. Out: :class:`Verdict`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from eft_trainer import guards as G
from eft_trainer.guards import GuardSet
from eft_trainer.report import paired_bootstrap
from eft_trainer.stages.context import RunContext
from eft_trainer.stages.measure import Measured

log = logging.getLogger("eft_trainer")


@dataclass
class Verdict:
    #: The paired bootstrap of the primary metric's gain at the gate's dimension.
    bootstrap: dict[str, float]
    #: Each guard's figures (:func:`eft_trainer.guards.figures`).
    guards: list[dict[str, Any]]
    #: Why the model is not published as the result (empty: promoted).
    reasons: list[str]

    @property
    def rejected(self) -> bool:
        return bool(self.reasons)


def guard_figures(
    guard_sets: list[GuardSet], base: Measured, tuned: Measured, pm: str, seed: int
) -> list[dict[str, Any]]:
    pdim = base.dimension
    return [
        G.figures(gs, b.per_query[pdim][pm], f.per_query[pdim][pm], primary_metric=pm, dimension=pdim, seed=seed)
        for gs, b, f in zip(guard_sets, base.guards, tuned.guards, strict=True)
    ]


def run(ctx: RunContext, guard_sets: list[GuardSet], base: Measured, tuned: Measured) -> Verdict:
    spec = ctx.cfg.spec
    pm, pdim, seed = spec.evaluation.primary_metric, base.dimension, spec.training.seed
    boot = paired_bootstrap(base.result.per_query[pdim][pm], tuned.result.per_query[pdim][pm], seed=seed)
    results = guard_figures(guard_sets, base, tuned, pm, seed)
    for r in results:
        log.info("guard %s", G.summary(r))
    why = []
    gate = spec.evaluation.gate
    gain = tuned.result.metrics[pdim][pm] - base.result.metrics[pdim][pm]
    if gate is not None and gain < gate.min_gain:
        why.append(f"{pm} gain {gain:+.4f} at {pdim} dims is below spec.evaluation.gate.minGain {gate.min_gain}")
    if guard_rejection := G.rejection(results):
        why.append(guard_rejection)
    return Verdict(boot, results, why)
