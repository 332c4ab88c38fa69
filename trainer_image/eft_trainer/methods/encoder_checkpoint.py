"""Checkpoints of ``method: queryEncoder``'s own training loop: the query tower, the optimiser, the schedule,
the random state and the loop's position (epoch, batch, step, early stopping), in one file written locally
and mirrored to ``<run prefix>/checkpoints/query-encoder/state.pt`` (a retried pod starts from it).

The batches of an epoch are a function of the seed and the epoch (:func:`eft_trainer.methods.cached_fit.
epoch_batches`) and the random state (dropout) is restored, so a resumed run takes the same steps as one that
was never interrupted, to the same weights.
"""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eft_trainer.storage import S3Uri, Store

log = logging.getLogger(__name__)

#: The folder of the query encoder's checkpoint, under the work dir's and the run's ``checkpoints/``.
FOLDER = "query-encoder"
FILE = "state.pt"


@dataclass
class LoopState:
    """Where the loop is: the next epoch (1-based) and batch in it, steps taken, the curve, early stopping."""

    epoch: int = 1
    next_batch: int = 0
    step: int = 0
    samples: int = 0
    curve: list[dict[str, float]] = field(default_factory=list)
    best: float = float("-inf")
    best_epoch: int = -1
    since: int = 0
    losses: list[float] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)


def rng_state() -> dict[str, Any]:
    import torch

    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, tower: Any, opt: Any, sched: Any, loop: LoopState, best: dict[str, Any] | None) -> None:
    """Write the checkpoint atomically (a pod stopped while writing leaves the previous one)."""
    import torch

    payload = {
        "tower": tower.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": rng_state(),
        "loop": asdict(loop),
        "best": best,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def mirror(path: Path, storage: Store, prefix: S3Uri | None) -> None:
    if prefix is not None:
        storage.upload(path, prefix.join(f"{FOLDER}/{FILE}"))
        log.info("mirrored the query encoder's checkpoint to %s", prefix.join(FOLDER + "/"))


def load(path: Path, storage: Store, prefix: S3Uri | None) -> dict[str, Any] | None:
    """The local checkpoint, else the mirrored one, else None (tensors and plain data only: weights_only)."""
    import torch

    data: bytes | None = None
    if path.is_file():
        data = path.read_bytes()
    elif prefix is not None and storage.exists(prefix.join(f"{FOLDER}/{FILE}")):
        data = storage.get_bytes(prefix.join(f"{FOLDER}/{FILE}"))
        log.info("fetched the query encoder's checkpoint from %s", prefix.join(FOLDER + "/"))
    if data is None:
        return None
    payload: dict[str, Any] = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return payload


def restore(payload: dict[str, Any], tower: Any, opt: Any, sched: Any) -> tuple[LoopState, dict[str, Any] | None]:
    """Put a checkpoint's weights, optimiser, schedule and random state back; the loop state and best weights."""
    tower.load_state_dict(payload["tower"])
    opt.load_state_dict(payload["optimizer"])
    sched.load_state_dict(payload["scheduler"])
    set_rng_state(payload["rng"])
    loop = LoopState(**payload["loop"])
    log.info("resumed the query encoder at epoch %d, batch %d (step %d)", loop.epoch, loop.next_batch, loop.step)
    best: dict[str, Any] | None = payload["best"]
    return loop, best
