"""Filters of generated pairs, each drop counted by reason: empty, tooShort, emptyPositive, duplicate and
nearDuplicate (word-trigram Jaccard at or above a threshold, found through MinHash buckets so that the
cost stays near linear, then checked exactly) on the text (:func:`apply`); then, optionally, two with the
base model's embeddings (:func:`apply_embedded`, pure: embeddings in, kept indices out):

* roundTrip (Promptagator, InPars): a query is kept when fewer than ``topK`` chunks of the pool score above
  its own positive (its own chunk's row stands for the positive, so it does not compete with itself);
* tooEasy (NVIDIA's retriever data generation): the ``dropFraction`` of the pairs left with the highest
  query-positive similarity are dropped (ties: the earlier pair goes first).
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable

import numpy as np

from eft_api.spec import GenerateFilter
from eft_trainer.generate import Pair

REASONS = ("empty", "tooShort", "emptyPositive", "duplicate", "nearDuplicate")
#: The reasons of :func:`apply_embedded`, counted (zero or not) when either of its filters is on.
MODEL_REASONS = ("roundTrip", "tooEasy")
_SCORES = 1 << 24
_HASHES, _BANDS = 24, 12  # 12 bands of 2 rows: pairs at Jaccard 0.5 collide in some band with p ~ 0.97


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


def shingles(norm: str) -> set[str]:
    words = norm.split()
    if len(words) < 3:
        return {norm}
    return {" ".join(words[i : i + 3]) for i in range(len(words) - 2)}


def _minhash(sh: set[str]) -> list[int]:
    encoded = [s.encode() for s in sh]
    return [min(zlib.crc32(e, seed * 0x9E3779B1 & 0xFFFFFFFF) for e in encoded) for seed in range(_HASHES)]


def apply(pairs: Iterable[Pair], spec: GenerateFilter) -> tuple[list[Pair], Counter[str]]:
    """The pairs kept, in order, and the count of drops by reason (every reason present, zero or not)."""
    dropped: Counter[str] = Counter(dict.fromkeys(REASONS, 0))
    kept: list[Pair] = []
    exact: set[str] = set()
    buckets: dict[tuple[int, tuple[int, ...]], list[int]] = defaultdict(list)
    kept_shingles: list[set[str]] = []
    rows = _HASHES // _BANDS
    for pair in pairs:
        query = pair.query.strip()
        norm = normalise(query)
        if not norm:
            dropped["empty"] += 1
            continue
        if len(query) < spec.min_query_chars:
            dropped["tooShort"] += 1
            continue
        if not pair.positive.strip():
            dropped["emptyPositive"] += 1
            continue
        if norm in exact:
            dropped["duplicate"] += 1
            continue
        sh = shingles(norm)
        keys = []
        if spec.near_duplicate_threshold < 1:
            mh = _minhash(sh)
            keys = [(b, tuple(mh[b * rows : (b + 1) * rows])) for b in range(_BANDS)]
            candidates = {i for k in keys for i in buckets.get(k, ())}
            if any(
                len(sh & kept_shingles[i]) / len(sh | kept_shingles[i]) >= spec.near_duplicate_threshold
                for i in candidates
            ):
                dropped["nearDuplicate"] += 1
                continue
        exact.add(norm)
        for k in keys:
            buckets[k].append(len(kept_shingles))
        kept_shingles.append(sh)
        kept.append(pair)
    return kept, dropped


def uses_model(spec: GenerateFilter) -> bool:
    """Whether the filters need the base model's embeddings."""
    return spec.round_trip.enabled or spec.easiness.drop_fraction > 0


def round_trip_ranks(
    queries: np.ndarray, positives: np.ndarray, pool: np.ndarray, own: np.ndarray, batch: int | None = None
) -> np.ndarray:
    """For each query, how many pool rows other than its own (``own[i]``, -1 for none) score strictly above
    its positive, by dot product (normalised embeddings: cosine). Batched over queries: by default as many as
    keep the score matrix near 16M floats (64 MB), whatever the pool's size."""
    batch = batch or max(1, min(4096, _SCORES // max(1, len(pool))))
    ranks = np.zeros(len(queries), dtype=np.int64)
    for start in range(0, len(queries), batch):
        q = queries[start : start + batch]
        scores = q @ pool.T
        rows = np.arange(len(q))
        mine = own[start : start + batch]
        scores[rows[mine >= 0], mine[mine >= 0]] = -np.inf
        target = np.einsum("ij,ij->i", q, positives[start : start + batch])
        ranks[start : start + batch] = (scores > target[:, None]).sum(axis=1)
    return ranks


def apply_embedded(
    queries: np.ndarray, positives: np.ndarray, pool: np.ndarray, own: np.ndarray, spec: GenerateFilter
) -> tuple[list[int], Counter[str], dict[str, float]]:
    """The indices of the pairs kept, in order, the drops by reason (roundTrip, tooEasy) and figures for the
    data card (the similarity above which pairs were too easy). Rows are normalised embeddings: ``queries``
    and ``positives`` one per pair, ``pool`` one per chunk, ``own[i]`` the row of pair i's chunk."""
    dropped: Counter[str] = Counter(dict.fromkeys(MODEL_REASONS, 0))
    figures: dict[str, float] = {}
    kept = np.arange(len(queries))
    if spec.round_trip.enabled and len(kept):
        ranks = round_trip_ranks(queries, positives, pool, own)
        kept = kept[ranks < spec.round_trip.top_k]
        dropped["roundTrip"] = len(queries) - len(kept)
    n_easy = math.floor(spec.easiness.drop_fraction * len(kept) + 1e-9)
    if n_easy:
        sims = np.einsum("ij,ij->i", queries[kept], positives[kept])
        order = np.argsort(-sims, kind="stable")  # the most similar first; ties: the earlier pair first
        easy = order[:n_easy]
        figures["tooEasyAbove"] = round(float(sims[easy].min()), 4)
        kept = np.delete(kept, easy)
        dropped["tooEasy"] = n_easy
    return [int(i) for i in kept], dropped, figures
