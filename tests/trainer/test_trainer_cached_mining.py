"""Hard negatives of the query-side methods, mined once from the cached embeddings: which ranked documents a
row may take (positive-aware margin, the rank window, the query's other positives), and that mining runs no
encoder (every training text is embedded exactly once)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from trainer_helpers import HUB_ID, make_cfg, spec_dict

from eft_api.spec import HardNegatives
from eft_trainer.methods import TrainInput
from eft_trainer.methods.cached_fit import cache_pairs
from eft_trainer.methods.cached_mining import SKIP_TOP, Window, mine_cached, pick
from eft_trainer.stages.augment import mines_here
from eft_trainer.storage import LocalStore

#: Documents 0..7 ranked best first, scores falling by 0.1 from 0.9.
RANKED = [(d, round(0.9 - 0.1 * d, 2)) for d in range(8)]


@pytest.mark.parametrize(
    ("window", "positives", "positive_score", "expected"),
    [
        # the window holds exactly `count` candidates: all of them, in rank order
        (Window(count=3, skip=0, range_max=3, margin=0.0), {0}, 0.9, [1, 2, 3]),
        # the first ranks passed over (likely unlabelled positives)
        (Window(count=3, skip=2, range_max=5, margin=0.0), {0}, 0.9, [3, 4, 5]),
        # positive-aware: 1 (0.8) scores above (1 - 0.2) * 0.9 = 0.72, so it is no negative
        (Window(count=2, skip=0, range_max=3, margin=0.2), {0}, 0.9, [2, 3]),
        # the query's other positives are never its negatives, whatever their rank
        (Window(count=3, skip=0, range_max=3, margin=0.0), {0, 2}, 0.9, [1, 3, 4]),
        # too few in the window: the next eligible ranks below it fill up
        (Window(count=3, skip=4, range_max=6, margin=0.0), {0}, 0.9, [5, 6, 7]),
        # the list runs out: fewer than count
        (Window(count=3, skip=5, range_max=7, margin=0.0), {0}, 0.9, [6, 7]),
        # a weak positive (0.35): only documents under 0.35 * 0.95 qualify
        (Window(count=2, skip=0, range_max=50, margin=0.05), {6}, 0.35, [7]),
    ],
)
def test_the_candidates_a_row_may_take(
    window: Window, positives: set[int], positive_score: float, expected: list[int]
) -> None:
    assert pick(RANKED, positives, positive_score, window, random.Random(0)) == expected


def test_a_wide_window_draws_count_negatives_seeded_in_rank_order() -> None:
    w = Window(count=2, skip=1, range_max=7, margin=0.0)
    draws = {tuple(pick(RANKED, {0}, 0.9, w, random.Random(seed))) for seed in range(20)}
    for d in draws:
        assert len(d) == 2 and list(d) == sorted(d) and set(d) <= {2, 3, 4, 5, 6, 7}
    assert len(draws) > 1  # not always the hardest two
    assert pick(RANKED, {0}, 0.9, w, random.Random(3)) == pick(RANKED, {0}, 0.9, w, random.Random(3))


def test_the_window_of_a_spec() -> None:
    w = Window.of(HardNegatives(enabled=True, count=3, margin=0.05, range_max=50))
    assert (w.count, w.skip, w.range_max, w.margin) == (3, SKIP_TOP, 50, 0.05)
    # a range too short to leave `count` after the skipped ranks is widened
    assert Window.of(HardNegatives(enabled=True, count=4, range_max=2)).range_max == SKIP_TOP + 4


def embeddings(n: int, dim: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_mined_from_the_cache_every_row_gets_count_real_negatives() -> None:
    docs = embeddings(60)
    queries = docs[:40] + 0.3 * embeddings(40, seed=1)  # query i is near document i
    qi = torch.arange(40)
    di = torch.arange(40).view(-1, 1)
    di[5, 0] = 4  # query 5's positive is document 4 ...
    qi[5] = 4  # ... as a second row of query 4: both 4 and 5 are query 4's positives
    mined = mine_cached(queries, docs, qi, di, Window(count=3, skip=1, range_max=20, margin=0.05), seed=7)
    assert mined is not None and mined.shape == (40, 3)
    for row in range(40):
        own = {int(di[r, 0]) for r in range(40) if qi[r] == qi[row]}
        assert not own & set(mined[row].tolist())
    again = mine_cached(queries, docs, qi, di, Window(count=3, skip=1, range_max=20, margin=0.05), seed=7)
    assert again is not None and torch.equal(mined, again)


def test_too_few_documents_mine_nothing() -> None:
    docs = embeddings(3)
    mined = mine_cached(docs, docs, torch.arange(3), torch.arange(3).view(-1, 1), Window(3, 0, 50, 0.0), seed=0)
    assert mined is None


class CountingModel:
    """A stand-in for the frozen base model: fixed embeddings per text, and a count of the texts it encoded."""

    device = torch.device("cpu")

    def __init__(self) -> None:
        self.encoded: dict[str, list[str]] = {"query": [], "document": []}

    def eval(self) -> None:
        pass

    def _embed(self, route: str, texts: list[str]) -> Any:
        """Text ``"... i"`` embeds near a vector of its own (question i near passage i)."""
        self.encoded[route] += texts
        shift = 0.1 if route == "query" else 0.0
        vectors = [np.random.default_rng(int(t.split()[-1])).standard_normal(16) + shift for t in texts]
        return np.stack(vectors).astype(np.float32)

    def encode_query(self, texts: list[str], **_: Any) -> Any:
        return self._embed("query", texts)

    def encode_document(self, texts: list[str], **_: Any) -> Any:
        return self._embed("document", texts)


@pytest.mark.parametrize("method", ["queryAdapter", "queryEncoder"])
def test_mining_runs_no_encoder_each_text_is_embedded_once(tmp_path: Path, method: str) -> None:
    hn = {"enabled": True, "count": 2, "margin": 0.05, "rangeMax": 10}
    cfg = make_cfg(spec_dict("bkt", "http://127.0.0.1:1", method=method, hardNegatives=hn), tmp_path, tmp_path)
    assert not mines_here(cfg.spec.training)  # the augment stage leaves it to the method
    rows = [{"anchor": f"question {i}", "positive": f"passage {i}"} for i in range(30)]
    model = CountingModel()
    data = cache_pairs(model, TrainInput(model, cfg, rows, LocalStore(tmp_path / "store"), tmp_path))
    assert sorted(model.encoded["query"]) == sorted(r["anchor"] for r in rows)
    assert sorted(model.encoded["document"]) == sorted(r["positive"] for r in rows)
    assert data.di.shape == (30, 3) and "mineSeconds" in data.details
    assert all(len(set(r)) == len(r) for r in data.rows)  # a row's negatives are other passages
    assert all(data.documents[int(data.di[i, 0])] == rows[i]["positive"] for i in range(30))


def test_full_still_mines_in_the_augment_stage(tmp_path: Path) -> None:
    hn = {"enabled": True}
    cfg = make_cfg(spec_dict("bkt", "http://127.0.0.1:1", hardNegatives=hn), tmp_path, tmp_path)
    assert mines_here(cfg.spec.training)


@pytest.mark.slow
def test_with_no_skipped_ranks_it_picks_what_sentence_transformers_mining_did(tmp_path: Path, model_dir: Path) -> None:
    """The mining this replaced (``eft_trainer.mining.mine``: sentence-transformers' ``mine_hard_negatives``,
    the top ``count`` after the relative margin, the model encoding everything again) and mining from the
    cached embeddings give the same negatives when no rank is skipped (the window of the old behaviour)."""
    import os

    from sentence_transformers import SentenceTransformer

    from eft_trainer.mining import mine

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = SentenceTransformer(str(model_dir / HUB_ID), device="cpu")
    rows = [
        {"anchor": f"How do I {verb} a {thing}?", "positive": f"To {verb} a {thing}, call {verb}_{thing}()."}
        for verb in ("open", "close", "copy", "sort")
        for thing in ("file", "list", "socket")
    ]
    spec = HardNegatives(enabled=True, count=2, margin=0.05, range_max=20)
    old = [[r[f"negative_{i}"] for i in (1, 2)] for r in mine(model, rows, spec)]
    cfg = make_cfg(spec_dict("bkt", "http://127.0.0.1:1", method="queryAdapter"), tmp_path, tmp_path)
    data = cache_pairs(model, TrainInput(model, cfg, rows, LocalStore(tmp_path / "store"), tmp_path))
    new = mine_cached(data.q_emb, data.d_emb, data.qi, data.di, Window(2, 0, 2, 0.05), seed=0)
    assert new is not None and len(old) == len(rows)
    assert [[data.documents[j] for j in r] for r in new.tolist()] == old
