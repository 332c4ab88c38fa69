"""``training.silverLabels`` (AugSBERT): unlabelled (anchor, positive) pairs become scored pairs.

Each training row gives its own (anchor, positive) pair, its mined hard negatives when
``training.hardNegatives`` is enabled (``negative_1..n``), and ``negativesPerPair`` sampled combinations (the
anchor with other rows' positives). The cross-encoder scores every distinct combination with its own
activation (a sigmoid for one output: scores in [0, 1]); the rows that come out are ``scored-pairs`` rows
(``sentence1``, ``sentence2``, ``score``) for CoSENT, AnglE or CosineSimilarity. A data step before training,
run by rank 0 (its rows go to the other processes) and kept for a retried pod (:func:`cross_encoder.cached`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eft_api.contract import RunConfig
from eft_trainer import cross_encoder as CE
from eft_trainer.storage import Store

log = logging.getLogger(__name__)

#: Where the labelled rows are kept for a retried pod (under the run's checkpoints/).
CACHE_NAME = "silver-labels"


@dataclass(frozen=True)
class Combinations:
    """The pairs to score, in a fixed order, and where they came from."""

    pairs: list[CE.Pair]
    positives: int
    mined: int
    sampled: int


def negative_keys(row: dict[str, Any]) -> list[str]:
    return sorted((k for k in row if k.startswith("negative_")), key=lambda k: int(k.split("_")[1]))


def combinations(rows: Sequence[dict[str, Any]], negatives_per_pair: int, seed: int) -> Combinations:
    """Every row's (anchor, positive), its mined (anchor, negative_i), and ``negatives_per_pair`` (anchor, another
    row's positive) drawn without replacement (fewer where fewer other positives exist); distinct pairs only,
    so a sampled pair that is a row's own pair or a mined one counts once, as what it was first. Pure."""
    rng = random.Random(seed)
    positives = sorted({r["positive"] for r in rows})
    seen: dict[CE.Pair, str] = {}
    for r in rows:
        seen.setdefault((r["anchor"], r["positive"]), "positive")
    for r in rows:
        for k in negative_keys(r):
            if isinstance(r[k], str) and r[k]:
                seen.setdefault((r["anchor"], r[k]), "mined")
    for r in rows:
        others = [p for p in positives if p != r["positive"]]
        for p in rng.sample(others, min(negatives_per_pair, len(others))):
            seen.setdefault((r["anchor"], p), "sampled")
    kinds = list(seen.values())
    return Combinations(list(seen), kinds.count("positive"), kinds.count("mined"), kinds.count("sampled"))


def scored_rows(pairs: Sequence[CE.Pair], scores: dict[CE.Pair, float]) -> list[dict[str, Any]]:
    """The scored-pairs rows the training path reads (``sentence1``, ``sentence2``, ``score``). Pure."""
    return [{"sentence1": a, "sentence2": b, "score": scores[(a, b)]} for a, b in pairs]


def label(
    cfg: RunConfig, storage: Store, work: Path, train: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The scored rows and the labelling's statistics (counts, score statistics; ``reused`` on a retry)."""
    spec = cfg.spec.training
    assert spec.silver_labels is not None and spec.cross_encoder is not None
    sl, ce_spec = spec.silver_labels, spec.cross_encoder

    def compute() -> CE.Labelled:
        t0 = time.perf_counter()
        combos = combinations(train, sl.negatives_per_pair, sl.seed)
        model, _ = CE.load(cfg, storage, work)
        scores = CE.score(model, combos.pairs, ce_spec, logits=False)
        CE.finite(scores)
        rows = scored_rows(combos.pairs, scores)
        n_pos = combos.positives
        values = [r["score"] for r in rows]
        stats = {
            "crossEncoder": ce_spec.model,
            "unlabelledPairs": len(train),
            "scoredPairs": len(rows),
            "positivePairs": n_pos,
            "minedPairs": combos.mined,
            "sampledPairs": combos.sampled,
            "scores": CE.score_stats(values),
            "positiveScores": CE.score_stats(values[:n_pos]),
            "negativeScores": CE.score_stats(values[n_pos:]),
            "seconds": time.perf_counter() - t0,
        }
        log.info("silver labels: scored %d pairs from %d unlabelled ones", len(rows), len(train))
        return rows, stats

    return CE.cached(cfg, storage, CACHE_NAME, compute)
