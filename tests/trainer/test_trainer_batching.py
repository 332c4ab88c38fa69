"""The length-grouped no-duplicates batching: the pure grouping, the sampler, and the real Trainer's epochs."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from trainer_helpers import HUB_ID

from eft_trainer.batching import fit_epoch, group_batches, split_to
from eft_trainer.storage import LocalStore


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
    # Texts are unique, so the batches are full but for the last one (the in-batch negatives a loss sees).
    sizes = [len(b) for b in batches]
    assert sizes == [bs] * (len(batches) - 1) + [n - bs * (len(batches) - 1)]


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


def repeated(n: int, distinct: int) -> list[tuple[str, str]]:
    """Generated-data shape: several questions per passage (n rows, ``distinct`` positives)."""
    return [(f"question {i}", f"passage {i % distinct} " + "x" * (i % distinct % 7)) for i in range(n)]


def sampler(texts: list[tuple[str, str]], bs: int, drop_last: bool = False) -> Any:
    import datasets

    from eft_trainer.sampler import LengthGroupedNoDuplicatesBatchSampler

    ds = datasets.Dataset.from_dict({"anchor": [a for a, _ in texts], "positive": [p for _, p in texts]})
    return LengthGroupedNoDuplicatesBatchSampler(ds, batch_size=bs, drop_last=drop_last, seed=7)


@pytest.mark.parametrize(("n", "distinct", "bs"), [(100, 5, 16), (300, 100, 32), (97, 97, 16), (64, 4, 8)])
def test_sampler_len_is_the_number_of_batches_it_yields_in_every_epoch(n: int, distinct: int, bs: int) -> None:
    """The HF Trainer sizes each epoch from len() taken at epoch 0: every epoch must yield exactly that many."""
    s = sampler(repeated(n, distinct), bs)
    first = len(s)
    for epoch in range(4):
        s.set_epoch(epoch)
        batches = list(s)
        assert len(s) == len(batches) == first
        assert sorted(i for b in batches for i in b) == list(range(n))
        for b in batches:
            texts = [t for i in b for t in s.texts[i]]
            assert len(texts) == len(set(texts))


def test_fit_epoch_splits_up_to_the_count_and_prefers_a_batching_that_fits() -> None:
    assert split_to([[0, 1, 2, 3], [4, 5]], 4) == [[0], [1], [2, 3], [4, 5]]
    too_many = [[0], [1], [2]]
    assert fit_epoch(iter([too_many, [[0, 1], [2]]]), 3) == [[0], [1], [2]]
    assert fit_epoch(iter([too_many]), 2) == too_many


@pytest.mark.slow
def test_the_real_trainer_trains_every_row_once_per_epoch(model_dir: Path, tmp_path: Path) -> None:
    """100 questions over 5 passages, batch 16: 20 batches an epoch, every one trained (len said 7 before)."""
    from sentence_transformers import SentenceTransformer

    from eft_api.spec import DataFormat, Loss, TrainingSpec
    from eft_trainer.training import to_dataset, train

    n = 100
    rows = [{"anchor": a, "positive": p} for a, p in repeated(n, 5)]
    model = SentenceTransformer(str(model_dir / HUB_ID))
    model.max_seq_length = 16
    seen: list[str] = []

    def record(module: Any, args: tuple[Any, ...]) -> None:
        texts = model.tokenizer.batch_decode(args[0]["input_ids"], skip_special_tokens=True)
        seen.extend(t for t in texts if t.startswith("question"))

    model[0].register_forward_pre_hook(record)
    spec = TrainingSpec(
        loss=Loss.MULTIPLE_NEGATIVES_RANKING, batch_size=16, epochs=2, learning_rate=1e-6, checkpoint_steps=1000
    )
    ds = to_dataset(rows, DataFormat.PAIRS, spec.loss)
    stats = train(model, ds, spec, DataFormat.PAIRS, tmp_path, storage=LocalStore(tmp_path / "store"))
    assert stats.steps >= 2 * 20  # at least 20 batches an epoch: a passage repeats 20 times, once per batch
    assert Counter(seen) == {f"question {i}": 2 for i in range(n)}
    assert stats.samples == 2 * n
