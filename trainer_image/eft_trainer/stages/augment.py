"""Augment: hard negatives mined with the base model, silver labels from a cross-encoder (rank 0 computes, the
rows go to every rank).

In: the base model and :class:`~eft_trainer.stages.check.Checked`. Out: the training rows to train on (the
labelling's statistics go to the report's ``data.silverLabels``)."""

from __future__ import annotations

import logging
from typing import Any

from eft_api.contract import RunConfig
from eft_api.spec import MINABLE_FORMATS, QUERY_SIDE_METHODS, TrainingSpec
from eft_trainer import distributed as dist
from eft_trainer.mining import mine
from eft_trainer.silver_labels import label
from eft_trainer.stages.check import Checked
from eft_trainer.stages.context import RunContext

log = logging.getLogger("eft_trainer")

Rows = list[dict[str, Any]]


def mines_here(training: TrainingSpec) -> bool:
    """Whether this stage mines: not for the query-side methods, which mine from the base model's embeddings
    of the training texts that they compute anyway (:mod:`eft_trainer.methods.cached_mining`). Pure."""
    return training.hard_negatives.enabled and training.method not in QUERY_SIDE_METHODS


def mine_negatives(model: Any, cfg: RunConfig, train: Rows) -> Rows:
    hn = cfg.spec.training.hard_negatives
    if not hn.enabled or cfg.spec.data.train.format not in MINABLE_FORMATS:
        return train
    mined = mine(model, train, hn)
    log.info("mined hard negatives: %d of %d rows kept a full set", len(mined), len(train))
    return mined or train


def run(ctx: RunContext, model: Any, checked: Checked) -> Rows:
    """Rank 0: mine and label (each when the spec asks), and send the rows to the other ranks."""
    training = ctx.cfg.spec.training
    train = checked.train
    if mines_here(training):
        with ctx.stage("mine"):
            train = dist.broadcast(mine_negatives(model, ctx.cfg, train))
    if training.silver_labels is not None:
        with ctx.stage("label"):
            rows, checked.stats["silverLabels"] = label(ctx.cfg, ctx.storage, ctx.own, train)
            train = dist.broadcast(rows)
    return train


def receive(ctx: RunContext, train: Rows) -> Rows:
    """A rank other than 0: take rank 0's mined and labelled rows (the counterpart of :func:`run`)."""
    training = ctx.cfg.spec.training
    if mines_here(training):
        train = dist.broadcast(None)
    if training.silver_labels is not None:
        train = dist.broadcast(None)
    return train
