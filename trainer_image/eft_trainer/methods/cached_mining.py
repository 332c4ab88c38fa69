"""Hard negatives for the query-side methods (``queryAdapter``, ``queryEncoder``), mined ONCE from the base
model's cached embeddings: the training texts are embedded once anyway (:mod:`eft_trainer.methods.cached_fit`),
so mining is a matrix product over those embeddings, and the base model never runs again for it.

What a row's negatives are (:func:`pick`, pure): the documents the base model ranks highest for its query,
other than the query's own positives, where

* the first ``skip`` ranks are passed over: on real corpora the passages ranked just under the positive are
  often relevant but unlabelled (a second section on the same function, a near-duplicate FAQ answer), and
  training the query away from them teaches the wrong thing (false negatives);
* a candidate scoring within ``margin`` of the positive (above ``(1 - margin) x`` its score) is skipped, as
  sentence-transformers' ``mine_hard_negatives(relative_margin=...)`` does for ``method: full``;
* ``count`` are drawn (seeded) from what is left among the first ``rangeMax`` ranks, not the top ``count``,
  so the negatives vary in hardness; a row with too few there takes the next ranks below the window.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence, Set
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eft_api.spec import HardNegatives

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: Ranks passed over at the top of each query's list (likely relevant but unlabelled passages).
SKIP_TOP = 10
#: Rows scored per matrix product (bounds the memory of the scores: rows x documents floats).
CHUNK_ROWS = 1024


@dataclass(frozen=True)
class Window:
    """Which ranked documents may be a row's negatives (see the module's docstring)."""

    count: int
    skip: int
    range_max: int
    margin: float

    @classmethod
    def of(cls, spec: HardNegatives) -> Window:
        return cls(
            count=spec.count, skip=SKIP_TOP, range_max=max(spec.range_max, SKIP_TOP + spec.count), margin=spec.margin
        )


def pick(
    ranked: Sequence[tuple[int, float]], positives: Set[int], positive_score: float, w: Window, rng: random.Random
) -> list[int]:
    """A row's negatives: from ``ranked`` ((document, score), best first), leave out the query's
    ``positives``, pass over the first ``w.skip`` ranks, keep candidates scoring below
    ``(1 - w.margin) * positive_score`` among the ranks up to ``w.range_max``, and draw ``w.count`` of them
    (seeded, in rank order); too few there and the next eligible ranks below the window fill up. Fewer than
    ``w.count`` only when the list runs out. Pure."""
    others = [(d, s) for d, s in ranked if d not in positives]
    ceiling = (1.0 - w.margin) * positive_score
    inside = [d for d, s in others[w.skip : w.range_max] if s < ceiling]
    chosen = sorted(rng.sample(range(len(inside)), min(w.count, len(inside))))
    picked = [inside[i] for i in chosen]
    if len(picked) < w.count:
        below = [d for d, s in others[w.range_max :] if s < ceiling]
        picked += below[: w.count - len(picked)]
    return picked


def ranked(indices: torch.Tensor, values: torch.Tensor) -> list[tuple[int, float]]:
    return list(zip(indices.tolist(), values.tolist(), strict=True))


def mine_cached(
    q_emb: torch.Tensor,
    d_emb: torch.Tensor,
    qi: torch.Tensor,
    di: torch.Tensor,
    w: Window,
    seed: int,
) -> torch.Tensor | None:
    """Each row's mined negatives (document indices, ``w.count`` columns) from the cached embeddings of its
    query (``q_emb[qi]``) against every cached document, its positive being ``di[:, 0]``; None (and a log line)
    when the documents are too few to give every row ``w.count`` negatives."""
    import torch

    positives: dict[int, set[int]] = {}
    for q, d in zip(qi.tolist(), di[:, 0].tolist(), strict=True):
        positives.setdefault(q, set()).add(d)
    k = min(d_emb.shape[0], w.range_max + w.count + max(len(p) for p in positives.values()))
    dn = torch.nn.functional.normalize(d_emb, dim=-1)
    rng = random.Random(seed)
    out: list[list[int]] = []
    for start in range(0, qi.shape[0], CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
        with torch.no_grad():
            scores = torch.nn.functional.normalize(q_emb[qi[rows]], dim=-1) @ dn.T
        own = scores.gather(1, di[rows, :1]).squeeze(1).tolist()
        top = scores.topk(k, dim=1)
        for i, q in enumerate(qi[rows].tolist()):
            picked = pick(ranked(top.indices[i], top.values[i]), positives[q], own[i], w, rng)
            if len(picked) < w.count and k < d_emb.shape[0]:  # a weak positive: look down the whole list
                every = scores[i].sort(descending=True)
                picked = pick(ranked(every.indices, every.values), positives[q], own[i], w, rng)
            out.append(picked)
    if any(len(r) < w.count for r in out):
        log.info(
            "hard negatives: %d documents are too few to give every row %d negatives: none mined",
            d_emb.shape[0],
            w.count,
        )
        return None
    return torch.tensor(out, dtype=di.dtype)
