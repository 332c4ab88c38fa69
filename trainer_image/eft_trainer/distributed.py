"""One process or many: the process group of a run under ``torchrun``, read from the environment it sets.

``torchrun`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``) in each
worker; without them the trainer is one process and every helper here is a no-op. The process count is
what torchrun says, never the spec: the same image runs one process on a laptop, ``--nproc_per_node=2`` on
CPU with gloo in the tests, one process per GPU with NCCL on a GPU node, and several nodes in an Indexed
Job (``eft_operator.render``).

Rank 0 is the *main* process: it alone evaluates, publishes, serves metrics, mirrors checkpoints and
writes the termination message; the other ranks train, then wait for it at a barrier and exit 0.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: How long a collective (a barrier included) waits for the other ranks: the other ranks wait at a barrier
#: while rank 0 evaluates and publishes, which can take long; a dead peer is noticed sooner (its
#: connections close, and torchrun stops the group). The Job's activeDeadlineSeconds bounds it anyway.
TIMEOUT_ENV = "EFT_DIST_TIMEOUT_SECONDS"
DEFAULT_TIMEOUT = 4 * 3600


@dataclass(frozen=True)
class World:
    """Where this process stands: its global rank, its rank on this node and how many processes train."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def local_main(self) -> bool:
        """The first process on its node (pod): it fetches what the processes of a node share."""
        return self.local_rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def own(self, work: Path) -> Path:
        """This process's own folder under the run's work dir: the processes of one pod share the work dir,
        so each fetches data (and an s3:// model) into its own ``rank-<n>``."""
        return work / f"rank-{self.rank}" if self.distributed else work


def from_env(environ: dict[str, str] | None = None) -> World:
    """The world torchrun describes in the environment (one process when it says nothing). Pure."""
    env = os.environ if environ is None else environ
    size = int(env.get("WORLD_SIZE", "1") or 1)
    rank = int(env.get("RANK", "0") or 0)
    local = int(env.get("LOCAL_RANK", str(rank)) or 0)
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"RANK={rank} WORLD_SIZE={size}: not a valid torchrun environment")
    return World(rank=rank, local_rank=local, size=size)


def init(world: World) -> None:
    """Join the process group (NCCL on GPUs, gloo on CPU) before anything else talks to the others.

    The HF Trainer (through accelerate) reuses an initialised group, so barriers before and after
    training and the training itself share one group with one timeout.
    """
    if not world.distributed:
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(world.local_rank)
    timeout = timedelta(seconds=int(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT)))
    dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timeout)
    log.info("joined the process group as rank %d of %d (local rank %d)", world.rank, world.size, world.local_rank)
    index = os.environ.get("JOB_COMPLETION_INDEX")
    if world.main and index not in (None, "0"):
        # c10d orders nodes by host name, which puts rank 0 on the pod of index 0; say so if it did not.
        log.warning("rank 0 runs on the pod of index %s, not 0: the termination message is on that pod", index)


def _ready() -> bool:
    import torch.distributed as dist

    return bool(dist.is_available() and dist.is_initialized())


def barrier() -> None:
    if _ready():
        import torch.distributed as dist

        dist.barrier()


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (pickled; for small results such as mined rows)."""
    if not _ready():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any (so all ranks stop at the same step)."""
    if not _ready():
        return flag
    import torch
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def close() -> None:
    if _ready():
        import torch.distributed as dist

        dist.destroy_process_group()
