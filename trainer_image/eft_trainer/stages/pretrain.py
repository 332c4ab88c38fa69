"""Pretrain (optional, ``training.pretrain``): adapt the base model to the domain's text (TSDAE) before training.

In: the base model, the training rows, the report's ``data`` counts. Out: the adapted model and the report's
``pretrain`` section (:class:`eft_trainer.pretrain.Pretrained`), or None when the spec asks for none."""

from __future__ import annotations

from typing import Any

from eft_trainer.pretrain import Pretrained, pretrain_stage
from eft_trainer.stages.check import Checked
from eft_trainer.stages.context import RunContext
from eft_trainer.stages.train import raise_if_interrupted


def run(ctx: RunContext, model: Any, train: list[dict[str, Any]], checked: Checked) -> Pretrained | None:
    pre_spec = ctx.cfg.spec.training.pretrain
    if pre_spec is None:
        return None
    with ctx.stage("pretrain"):
        cb = [ctx.progress.callback(pre_spec.batch_size), *ctx.callbacks]
        pre = pretrain_stage(ctx.cfg, model, train, ctx.storage, ctx.work, callbacks=cb, max_steps=ctx.max_steps)
        checked.stats["files"] = [*checked.stats["files"], *pre.files]
    raise_if_interrupted(pre.stats)
    return pre
