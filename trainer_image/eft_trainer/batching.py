"""Batches for in-batch-negative losses: no repeated text in a batch, rows of similar length together. Pure.

The sampler (:mod:`eft_trainer.sampler`) and the query adapter's own loop cut their epochs with these.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

log = logging.getLogger(__name__)


def group_batches(
    texts: Sequence[tuple[str, ...]], batch_size: int, order: Sequence[int], mega: int = 8, drop_last: bool = False
) -> list[list[int]]:
    """Batches with no repeated text (so in-batch negatives are real negatives), of similar lengths.

    ``order`` (a random permutation) is cut into mega-batches of ``mega * batch_size``; each is sorted by
    total text length, so a batch pads to a similar length (less wasted compute), then filled greedily
    skipping rows whose text is already in the batch (they move on to the next mega-batch). Pure.
    """
    lengths = [sum(len(t) for t in row) for row in texts]
    batches: list[list[int]] = []
    carry: list[int] = []
    step = batch_size * mega
    for start in range(0, len(order), step):
        chunk = sorted([*carry, *order[start : start + step]], key=lambda i: lengths[i])
        carry = []
        batch: list[int] = []
        seen: set[str] = set()
        for i in chunk:
            if any(t in seen for t in texts[i]):
                carry.append(i)
                continue
            batch.append(i)
            seen.update(texts[i])
            if len(batch) == batch_size:
                batches.append(batch)
                batch, seen = [], set()
        carry = batch + carry
    # The tail: pack what is left; a row whose text repeats in every open batch is left out of this epoch.
    while carry:
        batch, seen, rest = [], set(), []
        for i in carry:
            if len(batch) < batch_size and not any(t in seen for t in texts[i]):
                batch.append(i)
                seen.update(texts[i])
            else:
                rest.append(i)
        if len(batch) == batch_size or not drop_last:
            batches.append(batch)
        if len(rest) == len(carry):
            break
        carry = rest
    return batches


def split_to(batches: Sequence[list[int]], count: int) -> list[list[int]]:
    """``batches`` with the largest halved until there are ``count`` (a part of a batch repeats no text). Pure."""
    out = [list(b) for b in batches]
    while len(out) < count:
        i = max(range(len(out)), key=lambda j: len(out[j]))
        if len(out[i]) < 2:
            break
        half = len(out[i]) // 2
        out[i : i + 1] = [out[i][:half], out[i][half:]]
    return out


def fit_epoch(candidates: Iterable[list[list[int]]], count: int, full: bool = False) -> list[list[int]]:
    """The first candidate batching with at most ``count`` batches, split up to exactly ``count``; else the
    candidate with the fewest (its surplus batches would go untrained: logged). Pure but for the log line.

    ``full``: every batch must keep its size (several processes gather equal-sized batches), so nothing is
    split: the first candidate with at least ``count`` batches is cut to ``count``; else the one with the
    most, its first batches repeated up to ``count``."""
    if full:
        most: list[list[int]] = []
        for batches in candidates:
            if len(batches) >= count:
                return batches[:count]
            most = max(most, batches, key=len)
        return [most[i % len(most)] for i in range(count)] if most else most
    best: list[list[int]] | None = None
    for batches in candidates:
        if len(batches) <= count:
            return split_to(batches, count)
        if best is None or len(batches) < len(best):
            best = batches
    assert best is not None
    log.warning("no batching of this epoch fits in %d batches; the last %d are not trained", count, len(best) - count)
    return best
