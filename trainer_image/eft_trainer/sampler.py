"""The batch sampler for in-batch-negative losses: no repeated text in a batch, rows of similar length together.

A module-level class (the HF Trainer pickles its arguments, sampler class included, into each checkpoint).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from sentence_transformers.base.sampler import DefaultBatchSampler

from eft_trainer.training import group_batches


class LengthGroupedNoDuplicatesBatchSampler(DefaultBatchSampler):  # type: ignore[misc]
    """See :func:`eft_trainer.training.group_batches`; deterministic per (seed, epoch), so a resumed run
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

    def _batches(self) -> list[list[int]]:
        g = torch.Generator()
        g.manual_seed(int(self.seed) + int(getattr(self, "epoch", 0)))
        order = torch.randperm(len(self.texts), generator=g).tolist()
        batches = group_batches(self.texts, self.batch_size, order, drop_last=self.drop_last)
        shuffle = torch.randperm(len(batches), generator=g).tolist()
        return [batches[j] for j in shuffle]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._batches()

    def __len__(self) -> int:
        n = len(self.texts)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
