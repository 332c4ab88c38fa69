"""``method: full``: fine-tune every weight with ``SentenceTransformerTrainer`` (see :mod:`eft_trainer.training`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eft_api.contract import CHECKPOINTS_DIR
from eft_api.spec import training_format
from eft_trainer.methods import Trained, TrainInput
from eft_trainer.storage import S3Uri


class FullFineTune:
    """Today's path: the whole model trains, so every document embedding of an existing index goes stale."""

    name = "full"
    reindex_required = True

    def train(self, inp: TrainInput) -> Trained:
        from eft_trainer.training import to_dataset
        from eft_trainer.training import train as do_train

        cfg = inp.cfg
        fmt = training_format(cfg.spec)  # scored-pairs once silver labels have scored the pairs
        ds = to_dataset(inp.train, fmt, cfg.spec.training.loss)
        prefix = S3Uri.parse(cfg.run.output_prefix).join(CHECKPOINTS_DIR) if inp.storage is not None else None
        stats = do_train(
            inp.model,
            ds,
            cfg.spec.training,
            fmt,
            inp.work,
            storage=inp.storage,
            checkpoint_prefix=prefix,
            callbacks=inp.callbacks,
            max_steps=inp.max_steps,
            world=inp.world,
        )
        return Trained(inp.model, stats, {"method": self.name})

    def save_extras(self, trained: Any, out: Path) -> list[str]:
        return []
