"""The pure parts the query-side methods share: the validation split, each epoch's batches, early stopping,
the learning rates tried, and the validation metric (NDCG@10 against every cached document)."""

from __future__ import annotations

import math

import pytest
import torch

from eft_api.spec import TrainingSpec
from eft_trainer.methods.cached_fit import (
    MIN_VALIDATION_ROWS,
    Stopper,
    epoch_batches,
    negative_keys,
    split_rows,
    step_budget,
    validation_ndcg,
)
from eft_trainer.methods.query_adapter import learning_rates


@pytest.mark.parametrize(
    ("n", "fraction", "held"),
    [
        (100, 0.1, 10),
        (100, 0.0, 0),
        (50, 0.1, 0),  # 5 rows: under MIN_VALIDATION_ROWS, every row trains
        (80, 0.1, MIN_VALIDATION_ROWS),
        (10, 0.5, 0),  # 5 rows
        (9, 0.9, 0),  # would leave one row to train
    ],
)
def test_the_validation_split(n: int, fraction: float, held: int) -> None:
    train, val = split_rows(n, fraction, seed=7)
    assert len(val) == held and sorted(train + val) == list(range(n))
    assert split_rows(n, fraction, seed=7) == (train, val)  # seeded


def test_the_split_depends_on_the_seed() -> None:
    assert split_rows(200, 0.2, 1)[1] != split_rows(200, 0.2, 2)[1]


ROWS = [(f"q{i}", f"d{i % 7}") for i in range(30)]


def test_an_epochs_batches_are_a_function_of_seed_and_epoch() -> None:
    a = epoch_batches(ROWS, range(30), 4, seed=3, epoch=2)
    assert a == epoch_batches(ROWS, range(30), 4, seed=3, epoch=2)  # a resumed run replays them
    assert a != epoch_batches(ROWS, range(30), 4, seed=3, epoch=3)
    for b in a:
        docs = [ROWS[i][1] for i in b]
        assert len(b) >= 2 and len(set(docs)) == len(docs)  # no repeated text: real in-batch negatives


@pytest.mark.parametrize(
    ("epochs", "counts", "steps"),
    [
        (2, {1: 10, 2: 8, 3: 9}, 18),  # the epochs' own counts, not 2 x the first's 10 (a third epoch ran)
        (1, {1: 7, 2: 99}, 7),
        (1.5, {1: 10, 2: 8}, 14),  # half of the second epoch, rounded up
        (0.1, {1: 3}, 1),  # at least one step
        (3, {1: 4, 2: 4, 3: 4}, 12),
    ],
)
def test_the_step_budget_is_the_epochs_as_they_run(epochs: float, counts: dict[int, int], steps: int) -> None:
    assert step_budget(epochs, counts.__getitem__) == steps


def test_the_step_budget_of_real_batches_runs_whole_epochs() -> None:
    """Rows that repeat a text give a different number of batches per shuffle; the budget of 2 epochs
    is spent exactly at the end of epoch 2 (the loop counted epochsRun 3 before)."""
    rows = [(f"q{i}", f"d{i % 6}") for i in range(30)]  # 6 passages for 30 questions: the count varies
    counts = {e: len(epoch_batches(rows, range(30), 4, seed=4, epoch=e)) for e in (1, 2, 3)}
    assert len(set(counts.values())) > 1, counts  # the case that broke the old budget
    assert step_budget(2, lambda e: counts[e]) == counts[1] + counts[2]


def test_batches_use_only_the_training_rows() -> None:
    used = {i for b in epoch_batches(ROWS, range(0, 30, 2), 4, seed=0, epoch=1) for i in b}
    assert used <= set(range(0, 30, 2))


@pytest.mark.parametrize(
    ("scores", "patience", "best_epoch", "stopped_after"),
    [
        ([0.5, 0.6, 0.7, 0.8], 2, 3, None),
        ([0.5, 0.6, 0.55, 0.58], 2, 1, 3),
        ([0.5, 0.5, 0.5], 1, 0, 1),  # equal is not better
        ([0.5, 0.4, 0.6, 0.3, 0.2], 2, 2, 4),
    ],
)
def test_early_stopping(scores: list[float], patience: int, best_epoch: int, stopped_after: int | None) -> None:
    s = Stopper(patience)
    stopped = None
    for epoch, score in enumerate(scores):
        s.update(epoch, score)
        if s.stop and stopped is None:
            stopped = epoch
    assert s.best_epoch == best_epoch and s.best == max(scores)
    assert stopped == stopped_after


@pytest.mark.parametrize(
    ("adapter", "validating", "expected"),
    [
        ({"learningRate": 0.003}, True, [0.001, 0.003, 0.009]),
        ({"learningRate": 0.003}, False, [0.003]),
        ({"learningRate": 0.003, "learningRateSearch": False}, True, [0.003]),
        ({"learningRate": 0.5}, True, [0.5 / 3, 0.5, 1.0]),
    ],
)
def test_the_learning_rates_tried(adapter: dict[str, object], validating: bool, expected: list[float]) -> None:
    got = learning_rates(TrainingSpec.model_validate({"adapter": adapter}), validating)
    assert len(got) == len(expected) and all(math.isclose(a, b) for a, b in zip(got, expected, strict=True))


def test_validation_ndcg() -> None:
    docs = torch.eye(4)
    # Query 0 ranks its document first (1.0); query 1 ranks its document second (1 / log2(3)); query 2 last of 4.
    q = torch.tensor([[1.0, 0.1, 0, 0], [0.9, 0.5, 0, 0], [0.9, 0.8, 0.7, 0.1]])
    got = validation_ndcg(q, docs, torch.tensor([0, 1, 3]))
    assert math.isclose(got, (1.0 + 1 / math.log2(3) + 1 / math.log2(5)) / 3, rel_tol=1e-6)
    assert validation_ndcg(q, docs, torch.tensor([0, 1, 3]), k=2) < got  # rank 4 is past k=2


def test_negative_columns_are_the_ones_every_row_fills() -> None:
    rows = [
        {"anchor": "a", "positive": "b", "negative_1": "c", "negative_2": "d", "negative_10": "e"},
        {"anchor": "f", "positive": "g", "negative_1": "h", "negative_2": "", "negative_10": "i"},
    ]
    assert negative_keys(rows) == ["negative_1", "negative_10"]
