"""The length-grouped no-duplicates batching (pure)."""

from __future__ import annotations

import random

import pytest

from eft_trainer.training import group_batches


def rows(n: int, seed: int = 0) -> list[tuple[str, ...]]:
    rng = random.Random(seed)
    return [(f"q{i}", "x" * rng.randint(1, 300) + f"p{i}") for i in range(n)]


@pytest.mark.parametrize(("n", "bs"), [(100, 8), (97, 16), (5, 32), (257, 32)])
def test_every_row_once_and_batch_count_matches_len(n: int, bs: int) -> None:
    texts = rows(n)
    order = list(range(n))
    random.Random(1).shuffle(order)
    batches = group_batches(texts, bs, order)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(n))
    assert len(batches) == -(-n // bs)
    assert all(len(b) == bs for b in batches[:-1]) or n % bs


def test_no_duplicate_text_in_a_batch() -> None:
    texts = [(f"q{i}", f"p{i % 10}") for i in range(60)]  # positives repeat every 10 rows
    order = list(range(60))
    random.Random(2).shuffle(order)
    for b in group_batches(texts, 8, order):
        seen = [t for i in b for t in texts[i]]
        assert len(seen) == len(set(seen))


def test_batches_group_similar_lengths() -> None:
    texts = rows(512, seed=3)
    order = list(range(512))
    random.Random(3).shuffle(order)
    lengths = [sum(map(len, t)) for t in texts]

    def padded(batches: list[list[int]]) -> int:
        return sum(max(lengths[i] for i in b) * len(b) for b in batches)

    plain = [order[i : i + 32] for i in range(0, 512, 32)]
    assert padded(group_batches(texts, 32, order)) < 0.8 * padded(plain)


def test_drop_last() -> None:
    texts = rows(50)
    batches = group_batches(texts, 16, list(range(50)), drop_last=True)
    assert len(batches) == 3 and all(len(b) == 16 for b in batches)
