"""Filters of generated pairs, each drop counted by reason: empty, tooShort, emptyPositive, duplicate and
nearDuplicate (word-trigram Jaccard at or above a threshold, found through MinHash buckets so that the
cost stays near linear, then checked exactly)."""

from __future__ import annotations

import re
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable

from eft_api.spec import GenerateFilter
from eft_trainer.generate import Pair

REASONS = ("empty", "tooShort", "emptyPositive", "duplicate", "nearDuplicate")
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
