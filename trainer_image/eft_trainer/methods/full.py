"""``method: full``: fine-tune every weight with ``SentenceTransformerTrainer`` (see :mod:`eft_trainer.training`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eft_api.contract import CHECKPOINTS_DIR
from eft_api.spec import training_format
from eft_trainer.methods import Trained, TrainInput
from eft_trainer.storage import S3Uri
from eft_trainer.training import TrainStats, to_dataset
from eft_trainer.training import train as do_train


def checkpoint_prefix(inp: TrainInput) -> S3Uri:
    """Where the run's checkpoints are mirrored."""
    return S3Uri.parse(inp.cfg.run.output_prefix).join(CHECKPOINTS_DIR)


def train_all_weights(inp: TrainInput, ds: Any) -> TrainStats:
    """Train every weight of ``inp.model`` on ``ds`` with the spec's loss (checkpoints, resume, DDP)."""
    cfg = inp.cfg
    return do_train(
        inp.model,
        ds,
        cfg.spec.training,
        training_format(cfg.spec),
        inp.work,
        storage=inp.storage,
        checkpoint_prefix=checkpoint_prefix(inp),
        callbacks=inp.callbacks,
        max_steps=inp.max_steps,
        world=inp.world,
        cached_mini_batch=inp.cached_mini_batch,
    )


class FullFineTune:
    """Today's path: the whole model trains, so every document embedding of an existing index goes stale."""

    name = "full"
    reindex_required = True

    def train(self, inp: TrainInput) -> Trained:
        spec = inp.cfg.spec
        # scored-pairs once silver labels have scored the pairs
        ds = to_dataset(inp.train, training_format(spec), spec.training.loss)
        return Trained(inp.model, train_all_weights(inp, ds), {"method": self.name})

    def save_extras(self, trained: Any, out: Path) -> list[str]:
        return []
