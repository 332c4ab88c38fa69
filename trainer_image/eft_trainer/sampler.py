"""The batch sampler for in-batch-negative losses: no repeated text in a batch, rows of similar length together.

A module-level class (the HF Trainer pickles its arguments, sampler class included, into each checkpoint).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from sentence_transformers.base.sampler import DefaultBatchSampler

from eft_trainer.batching import fit_epoch, group_batches


def _world_size() -> int:
    import torch.distributed as dist

    return int(dist.get_world_size()) if dist.is_available() and dist.is_initialized() else 1


class LengthGroupedNoDuplicatesBatchSampler(DefaultBatchSampler):  # type: ignore[misc]
    """See :func:`eft_trainer.batching.group_batches`; deterministic per (seed, epoch), so a resumed run
    skips exactly the batches it had already trained on."""

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        drop_last: bool,
        valid_label_columns: list[str] | None = None,
        generator: Any = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            dataset,
            batch_size=batch_size,
            drop_last=drop_last,
            valid_label_columns=valid_label_columns,
            generator=generator,
            seed=seed,
        )
        cols = [c for c in dataset.column_names if c not in set(valid_label_columns or [])]
        data = dataset.select_columns(cols).to_dict()
        self.texts = [tuple(str(data[c][i]) for c in cols) for i in range(len(dataset))]

    #: Attempts at an epoch's batching (after the first epoch) that fit in the first epoch's batch count.
    ATTEMPTS = 64

    def _group(self, seed: int) -> list[list[int]]:
        g = torch.Generator()
        g.manual_seed(seed)
        order = torch.randperm(len(self.texts), generator=g).tolist()
        batches = group_batches(self.texts, self.batch_size, order, drop_last=self.drop_last)
        shuffle = torch.randperm(len(batches), generator=g).tolist()
        return [batches[j] for j in shuffle]

    def _batches(self) -> list[list[int]]:
        """This epoch's batches, computed once per epoch (``len`` and ``iter`` agree on them).

        The HF Trainer sizes every epoch (steps, learning-rate schedule, where a resumed run restarts) from
        ``len`` taken once, at epoch 0, so every later epoch is fitted to the first epoch's batch count: the
        first of a few deterministic re-shuffles that needs no more batches, split (largest batch first,
        which never repeats a text) up to exactly that count.
        """
        epoch = int(getattr(self, "epoch", 0))
        cache: dict[int, list[list[int]]] = self.__dict__.setdefault("_cache", {})
        if epoch not in cache:
            world = _world_size()
            first = cache.get(0) or self._group(int(self.seed))
            if world > 1:
                # Under several processes each takes every world-th batch (accelerate's BatchSamplerShard) and
                # the loss gathers equal-sized batches: full batches only, as many on every process.
                first = first[: len(first) // world * world]
            cache.clear()
            cache[0] = first
            if epoch:
                cache[epoch] = fit_epoch(
                    (self._group(int(self.seed) + epoch + k * 1_000_003) for k in range(self.ATTEMPTS)),
                    len(first),
                    full=world > 1,
                )
        return cache[epoch]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._batches()

    def __len__(self) -> int:
        return len(self._batches())
