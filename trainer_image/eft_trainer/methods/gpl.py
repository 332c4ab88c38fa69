"""``method: gpl``: Generative Pseudo Labeling (Wang et al., 2022) on the run's queries and passages.

1. Queries: the anchors of ``pairs``, or the queries the generate stage made from ``documents``.
2. Negatives: mined with the base model (``training.hardNegatives`` count, rangeMax and margin; rows the
   entrypoint already mined are used as they are). A query left without ``count`` negatives is dropped.
3. Labels: the cross-encoder (``training.crossEncoder``) scores (query, positive) and each (query,
   negative) as raw logits; the label of a row is ``[score(pos) - score(neg_i) for each i]``.
4. Train: sentence-transformers' ``MarginMSELoss`` (wrapped in MatryoshkaLoss when dimensions are given)
   through the same :func:`eft_trainer.training.train` as ``full``: checkpoints, SIGTERM, resume and DDP
   are the same. The whole model trains, so an existing index must be re-embedded.

Steps 2-3 run once (rank 0; their rows go to the other processes) and their rows are kept beside the
checkpoints, so a pod retried after SIGTERM trains on exactly the same rows and resumes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eft_api.contract import CHECKPOINTS_DIR
from eft_api.spec import DataFormat
from eft_trainer import cross_encoder as CE
from eft_trainer import distributed as dist
from eft_trainer.errors import InvalidCorpus
from eft_trainer.methods import Trained, TrainInput
from eft_trainer.mining import mine
from eft_trainer.silver_labels import negative_keys
from eft_trainer.storage import S3Uri
from eft_trainer.training import train as do_train

log = logging.getLogger(__name__)

#: Where the labelled rows are kept for a retried pod (under the run's checkpoints/).
CACHE_NAME = "gpl-labels"


def margins(pos: float, negs: Sequence[float]) -> list[float]:
    """GPL's labels of one query: the cross-encoder's score of its positive minus each negative's. Pure."""
    return [pos - n for n in negs]


def full_rows(rows: Sequence[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """(anchor, positive, negative_1..count) rows: those with ``count`` negatives, cut to them. Pure."""
    out = []
    for r in rows:
        negs = [r[k] for k in negative_keys(r) if isinstance(r[k], str) and r[k]]
        if len(negs) >= count:
            out.append({"anchor": r["anchor"], "positive": r["positive"], "negatives": negs[:count]})
    return out


def labelled_rows(rows: Sequence[dict[str, Any]], scores: dict[CE.Pair, float]) -> list[dict[str, Any]]:
    """Each row with its margins as ``label``. Pure."""
    return [
        {
            "anchor": r["anchor"],
            "positive": r["positive"],
            "negatives": r["negatives"],
            "label": margins(scores[(r["anchor"], r["positive"])], [scores[(r["anchor"], n)] for n in r["negatives"]]),
        }
        for r in rows
    ]


def to_dataset(rows: Sequence[dict[str, Any]]) -> Any:
    """Columns in MarginMSELoss's order: anchor, positive, negative_1..n, then the label (one margin each)."""
    import datasets

    n = len(rows[0]["negatives"])
    cols: dict[str, list[Any]] = {"anchor": [r["anchor"] for r in rows], "positive": [r["positive"] for r in rows]}
    for i in range(n):
        cols[f"negative_{i + 1}"] = [r["negatives"][i] for r in rows]
    cols["label"] = [r["label"] for r in rows]
    return datasets.Dataset.from_dict(cols)


class GPL:
    """Mined negatives, cross-encoder margins, MarginMSE: the whole model trains (re-index required)."""

    name = "gpl"
    reindex_required = True

    def label(self, inp: TrainInput) -> CE.Labelled:
        """Mine (unless already mined), score with the cross-encoder, compute margins (rank 0)."""
        cfg = inp.cfg
        hn = cfg.spec.training.hard_negatives
        ce_spec = cfg.spec.training.cross_encoder
        assert ce_spec is not None
        t0 = time.perf_counter()
        premined = any(negative_keys(r) for r in inp.train)
        mined = inp.train if premined else mine(inp.model, inp.train, hn, batch_size=cfg.spec.evaluation.batch_size)
        rows = full_rows(mined, hn.count)
        if not rows:
            raise InvalidCorpus(
                f"gpl: no query kept {hn.count} mined negatives (spec.training.hardNegatives.count) of "
                f"{len(inp.train)}: add data, lower the count, or lower spec.training.hardNegatives.margin"
            )
        mine_seconds = time.perf_counter() - t0
        model, _ = CE.load(cfg, inp.storage, inp.work)
        pairs = [(r["anchor"], t) for r in rows for t in (r["positive"], *r["negatives"])]
        scores = CE.score(model, pairs, ce_spec, logits=True)
        CE.finite(scores)
        out = labelled_rows(rows, scores)
        pos = [scores[(r["anchor"], r["positive"])] for r in rows]
        neg = [scores[(r["anchor"], n)] for r in rows for n in r["negatives"]]
        flat = [m for r in out for m in r["label"]]
        stats = {
            "crossEncoder": ce_spec.model,
            "queries": len(inp.train),
            "queriesLabelled": len(out),
            "queriesDropped": len(inp.train) - len(out),
            "negativesPerQuery": hn.count,
            "minedBy": "entrypoint" if premined else "gpl",
            "pairsScored": len(set(pairs)),
            "positiveScores": CE.score_stats(pos),
            "negativeScores": CE.score_stats(neg),
            "margins": CE.score_stats(flat),
            "marginsPositive": sum(1 for m in flat if m > 0),
            "mineSeconds": mine_seconds,
            "labelSeconds": time.perf_counter() - t0 - mine_seconds,
        }
        log.info("gpl: labelled %d of %d queries with %d negatives each", len(out), len(inp.train), hn.count)
        return out, stats

    def train(self, inp: TrainInput) -> Trained:
        cfg = inp.cfg
        w = inp.world
        main = w is None or w.main
        labelled = CE.cached(cfg, inp.storage, CACHE_NAME, lambda: self.label(inp)) if main else None
        rows, stats = dist.broadcast(labelled)
        prefix = S3Uri.parse(cfg.run.output_prefix).join(CHECKPOINTS_DIR)
        train_stats = do_train(
            inp.model,
            to_dataset(rows),
            cfg.spec.training,
            DataFormat.PAIRS,
            inp.work,
            storage=inp.storage,
            checkpoint_prefix=prefix,
            callbacks=inp.callbacks,
            max_steps=inp.max_steps,
            world=w,
        )
        return Trained(inp.model, train_stats, {"method": self.name, "gplLabels": stats})

    def save_extras(self, trained: Any, out: Path) -> list[str]:
        return []
