"""Merge (``training.merge``): weight interpolations between the base and the fine-tuned model, measured on the
evaluation set and the guards; the best ratio passing every guard and the gate replaces the fine-tuned model.

In: the base weights (kept before training), the trained model, the base and fine-tuned
:class:`~eft_trainer.stages.measure.Measured`. Out: :class:`Merged` (the model to gate and publish, its figures,
the report's section). ``queryAdapter`` merges its adapter with the identity (the base model is frozen)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from eft_api.spec import Method
from eft_trainer import evidence as EV
from eft_trainer import merge as M
from eft_trainer.methods.query_adapter import router_of
from eft_trainer.stages.check import Checked
from eft_trainer.stages.context import RunContext
from eft_trainer.stages.gate import judge
from eft_trainer.stages.measure import Measured, evaluate, evaluate_guards


@dataclass
class Merged:
    model: Any
    tuned: Measured
    #: The report's ``merge`` section (None: training.merge is off).
    section: dict[str, Any] | None


def base_weights(ctx: RunContext, model: Any) -> dict[str, Any] | None:
    """A copy of the base weights when a merge will need them (not for queryAdapter: its base is frozen)."""
    return EV.base_state(model, ctx.cfg)


def merged_adapter_model(tuned: Any, ratio: float) -> Any:
    """A queryAdapter model whose query-route adapter is interpolated with the identity."""
    model = copy.deepcopy(tuned)
    router = router_of(model)
    if router is None:
        raise ValueError("the queryAdapter model has no Router: cannot merge its adapter")
    for m in router.sub_modules["query"]:
        state = m.state_dict()
        if state:
            m.load_state_dict(M.lerp_state(M.identity_state(m), state, ratio))
    return model


def run(
    ctx: RunContext,
    checked: Checked,
    weights: dict[str, Any] | None,
    model: Any,
    base: Measured,
    tuned: Measured,
    corpus_embeddings: Any,
) -> Merged:
    cfg = ctx.cfg
    if not cfg.spec.training.merge.enabled:
        return Merged(model, tuned, None)

    def merged(ratio: float) -> Any:
        if cfg.spec.training.method is Method.QUERY_ADAPTER:
            return merged_adapter_model(model, ratio)
        assert weights is not None
        out = copy.deepcopy(model)
        out.load_state_dict(M.lerp_state(weights, model.state_dict(), ratio))
        return out

    def measure(m: Any) -> tuple[Any, list[Any]]:
        result = evaluate(m, checked.irset, cfg, corpus_embeddings=corpus_embeddings)
        return result, evaluate_guards(m, checked.guard_sets, base.dimension, cfg)

    def judged(m: EV.Measured) -> EV.Measured:
        m.guard_results, m.gain_ok = judge(
            ctx, checked.guard_sets, base, Measured(m.tuned, base.dimension, m.guards_tuned)
        )
        return m

    with ctx.stage("merge"):
        first = judged(EV.Measured(model, tuned.result, tuned.guards))
        final, section = EV.merge_stage(cfg, merged, first, measure, judged, base.dimension)
    return Merged(final.model, Measured(final.tuned, base.dimension, final.guards_tuned), section)
