"""Training methods: one module per method behind one small interface, chosen once from the spec.

* :mod:`eft_trainer.methods.full` fine-tunes the whole model (every document must be re-embedded);
* :mod:`eft_trainer.methods.query_adapter` freezes the base model and trains a query-side module only
  (document embeddings stay the base model's, bit for bit);
* :mod:`eft_trainer.methods.query_encoder` keeps the base model as the frozen document tower and trains a full
  copy of it as the query tower (two towers in one model; no re-index);
* :mod:`eft_trainer.methods.distillation` trains the whole model to reproduce a teacher's embeddings (MSE);
* :mod:`eft_trainer.methods.gpl` fine-tunes the whole model on cross-encoder margins (MarginMSE) of mined
  negatives.

The entrypoint calls :func:`for_spec` once and then only the interface (:class:`TrainingMethod`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from eft_api.spec import EmbeddingFinetuneSpec, Method

if TYPE_CHECKING:
    from eft_api.contract import RunConfig
    from eft_trainer.distributed import World
    from eft_trainer.storage import Store
    from eft_trainer.training import TrainStats


@dataclass
class TrainInput:
    """What every method gets: the loaded base model, the run config, the checked training rows, where to
    keep checkpoints (``storage``: S3, or a local folder), the HF Trainer callbacks and step limit, and the
    processes of a torchrun run."""

    model: Any
    cfg: RunConfig
    train: list[dict[str, Any]]
    storage: Store
    work: Path
    callbacks: Sequence[Any] = ()
    max_steps: int = -1
    #: The processes of a torchrun run (None: one process).
    world: World | None = None
    #: The out-of-memory fallback (:mod:`eft_trainer.oom`): train with the loss's cached variant, this mini-batch.
    cached_mini_batch: int | None = None

    @property
    def own(self) -> Path:
        """This process's own folder (the processes of one pod share ``work``; each downloads into its own)."""
        return self.work if self.world is None else self.world.own(self.work)


@dataclass
class Trained:
    """What a method hands on: the model to evaluate and publish, training statistics, method details."""

    model: Any
    stats: TrainStats
    details: dict[str, Any] = field(default_factory=dict)
    #: A further model to measure on the same evaluation as the base and trained models (the teacher).
    reference: Any = None


class TrainingMethod(Protocol):
    #: The spec's name of the method.
    name: str
    #: Whether document embeddings made with the base model must be recomputed with the trained model.
    reindex_required: bool

    def train(self, inp: TrainInput) -> Trained:
        """Train; return the trained model and what happened."""
        ...

    def save_extras(self, trained: Any, out: Path) -> list[str]:
        """Write further artifacts to publish (folders under ``out``); return their names (``adapter/``)."""
        ...


def for_spec(spec: EmbeddingFinetuneSpec) -> TrainingMethod:
    """The method the spec asks for (chosen once per run)."""
    if spec.training.method is Method.GPL:
        from eft_trainer.methods.gpl import GPL

        return GPL()
    if spec.training.method is Method.QUERY_ADAPTER:
        from eft_trainer.methods.query_adapter import QueryAdapter

        return QueryAdapter()
    if spec.training.method is Method.QUERY_ENCODER:
        from eft_trainer.methods.query_encoder import QueryEncoder

        return QueryEncoder()
    if spec.training.method is Method.DISTILLATION:
        from eft_trainer.methods.distillation import Distillation

        return Distillation()
    from eft_trainer.methods.full import FullFineTune

    return FullFineTune()
