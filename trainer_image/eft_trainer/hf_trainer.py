"""The HF Trainer pieces of a run: sentence-transformers' trainer, counting the rows its loss sees and without
the stock model card (the published card is :func:`eft_trainer.publish.model_card`), and the callbacks that
mirror checkpoints, skip the final save and stop on SIGTERM. Imports sentence-transformers (and so torch and
transformers) at the top: only :func:`eft_trainer.training.train` imports this module, when it trains."""

from __future__ import annotations

import logging
from pathlib import Path
from types import FrameType
from typing import Any

from sentence_transformers import SentenceTransformerTrainer
from transformers import TrainerCallback

from eft_trainer import distributed as dist
from eft_trainer.checkpoints import mirror_checkpoint
from eft_trainer.distributed import World
from eft_trainer.storage import S3Uri, Store

log = logging.getLogger(__name__)


def batch_rows(inputs: dict[str, Any]) -> int:
    """The number of rows in a collated batch: the first dimension of its first tensor. Pure."""
    for value in inputs.values():
        shape = getattr(value, "shape", None)
        if shape is not None and len(shape) >= 1:
            return int(shape[0])
    return 0


class RowCountingTrainer(SentenceTransformerTrainer):  # type: ignore[misc]
    #: Rows the loss has seen in this process (the throughput's numerator; a short tail batch counts short).
    rows_trained = 0

    def add_model_card_callback(self, default_args_dict: dict[str, Any]) -> None:
        # The published model card is ours (publish.model_card): skip the stock card's data collection.
        return None

    def compute_loss(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if model.training:
            self.rows_trained += batch_rows(inputs)
        return super().compute_loss(model, inputs, *args, **kwargs)


class MirrorCheckpoints(TrainerCallback):  # type: ignore[misc]
    """Rank 0 mirrors each checkpoint once every rank has written its part (its RNG state) of it."""

    def __init__(self, storage: Store, prefix: S3Uri | None, world: World) -> None:
        self.storage, self.prefix, self.world = storage, prefix, world

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.prefix is None:
            return
        dist.barrier()
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if self.world.main and ckpt.is_dir():
            mirror_checkpoint(self.storage, ckpt, self.prefix)


class NoFinalCheckpoint(TrainerCallback):  # type: ignore[misc]
    """Skip the end-of-training checkpoint: the model is evaluated and published right after, and a pod
    that dies before publishing resumes from the last periodic checkpoint (at most checkpointSteps back).
    Saves the time of writing (and mirroring) the weights and optimizer state once more."""

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step >= state.max_steps and state.global_step % max(1, int(args.save_steps)) != 0:
            control.should_save = False


class StopOnSigterm(TrainerCallback):  # type: ignore[misc]
    """On SIGTERM: save (and so mirror) a checkpoint at the end of the current step, then stop."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.requested = False

    def handler(self, signum: int, frame: FrameType | None) -> None:
        log.warning("received SIGTERM: saving a checkpoint at the end of this step and stopping")
        self.requested = True

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        # Every rank stops at the same step (a rank that went on alone would wait for the others forever).
        if self.world.distributed:
            self.requested = dist.any_rank(self.requested)
        if self.requested:
            control.should_save = True
            control.should_training_stop = True


def make_callbacks(
    storage: Store, prefix: S3Uri | None, world: World | None = None
) -> tuple[MirrorCheckpoints, NoFinalCheckpoint, StopOnSigterm]:
    """The checkpoint callbacks in their order: a SIGTERM's save request overrides NoFinalCheckpoint."""
    w = world or World()
    return MirrorCheckpoints(storage, prefix, w), NoFinalCheckpoint(), StopOnSigterm(w)
