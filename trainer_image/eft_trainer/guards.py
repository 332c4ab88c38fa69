"""Guards against forgetting (``spec.evaluation.guards``): further evaluation sets measured base vs fine-tuned
exactly as the main set, at the gate's dimension (or the full one), with the same paired bootstrap. A guard
whose primary metric drops by more than its ``maxDrop`` rejects the model (``PromotionRejected``).

Reading a guard set is file I/O (its data arrives like the training data); the figures and the verdict are
pure. A guard's corpus is its own: every positive of a pairs set; for beir, every judged document plus up to
``data.eval.maxDistractors`` others, as for the main set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eft_api.contract import GuardFigures
from eft_api.spec import Columns, DataFormat, EvalData, Guard
from eft_trainer import data as D
from eft_trainer.errors import InvalidCorpus
from eft_trainer.report import paired_bootstrap


@dataclass
class GuardSet:
    """A guard's evaluation set, read and checked."""

    guard: Guard
    index: int
    irset: D.IRSet
    stats: dict[str, Any]

    @property
    def field(self) -> str:
        return f"spec.evaluation.guards[{self.index}]"


def load_guard(guard: Guard, index: int, root: Path, files: Sequence[Path], eval_spec: EvalData) -> GuardSet:
    """Read and check a guard's data (InvalidCorpus names the guard, the file and the line)."""
    where = f"spec.evaluation.guards[{index}]"
    what = f"guard {guard.name} ({where}.uri)"
    if guard.format is DataFormat.BEIR:
        try:
            b = D.read_beir(root, require_train=False)
        except InvalidCorpus as exc:
            raise InvalidCorpus(f"{what}: {exc.message}") from None
        qrels = b.test_qrels if b.test_qrels else b.train_qrels
        irset = D.ir_from_beir(b.corpus, b.queries, qrels, eval_spec)
        stats: dict[str, Any] = {}
    else:
        base = guard.uri if guard.uri.endswith("/") else guard.uri.rsplit("/", 1)[0] + "/"
        rows = D.read_files(files, guard.file_type, root, base_uri=base, what=what)
        cols = Columns(anchor=guard.columns.anchor, positive=guard.columns.positive)
        records, clean = D.drop_duplicates(
            D.map_and_check(rows, DataFormat.PAIRS, cols, what=what, columns_field=f"{where}.columns"),
            DataFormat.PAIRS,
        )
        irset = D.ir_from_pairs(records, [], eval_spec)
        stats = {"rowsRead": clean.rows_read, "duplicatesDropped": clean.duplicates_dropped}
        stats["sameTextDropped"] = clean.same_text_dropped
    if not irset.queries:
        raise InvalidCorpus(f"{what}: no query with a relevant document")
    stats.update(irset.stats())
    return GuardSet(guard, index, irset, stats)


def figures(
    gs: GuardSet,
    base: Sequence[float],
    tuned: Sequence[float],
    *,
    primary_metric: str,
    dimension: int,
    seed: int,
    decide_by: str = "estimate",
) -> dict[str, Any]:
    """A guard's figures: base, fine-tuned, delta and bootstrap CI of the primary metric; passed or not (on the
    delta, or with ``decide_by`` ciLower on the lower end of its CI). Pure."""
    boot = paired_bootstrap(base, tuned, seed=seed)
    b = sum(base) / len(base) if base else 0.0
    t = sum(tuned) / len(tuned) if tuned else 0.0
    delta = t - b
    g = gs.guard
    return {
        "name": g.name,
        "uri": g.uri,
        "format": g.format.value,
        "primaryMetric": primary_metric,
        "dimension": dimension,
        "maxDrop": g.max_drop,
        "base": b,
        "finetuned": t,
        "delta": delta,
        "bootstrap": boot,
        "data": gs.stats,
        # A drop larger than maxDrop fails (a tiny tolerance keeps an exactly-equal model from failing a 0 maxDrop
        # on floating-point noise).
        "passed": -(boot["low"] if decide_by == "ciLower" else delta) <= g.max_drop + 1e-12,
    }


def termination_figures(r: dict[str, Any]) -> GuardFigures:
    """A guard's figures for the termination message and so the status ``runs[]`` entry (4 decimals). Pure."""
    b = r["bootstrap"]
    return GuardFigures(
        name=r["name"],
        base=round(r["base"], 4),
        finetuned=round(r["finetuned"], 4),
        delta=round(r["delta"], 4),
        ci_low=round(b["low"], 4),
        ci_high=round(b["high"], 4),
        max_drop=r["maxDrop"],
        passed=r["passed"],
    )


def failed(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in results if not r["passed"]]


def summary(r: dict[str, Any]) -> str:
    """One guard in a line: ``faq ndcg@10 0.8030 -> 0.7780 (-0.0250; 95% CI -0.0600 .. +0.0100; maxDrop 0.05)``."""
    b = r["bootstrap"]
    return (
        f"{r['name']} {r['primaryMetric']} {r['base']:.4f} -> {r['finetuned']:.4f} ({r['delta']:+.4f}; "
        f"{int(b['level'] * 100)}% CI {b['low']:+.4f} .. {b['high']:+.4f}; maxDrop {r['maxDrop']:g})"
    )


def rejection(results: Sequence[dict[str, Any]]) -> str:
    """Why the guards reject the model ('' when none does). Pure."""
    bad = failed(results)
    if not bad:
        return ""
    return "; ".join(
        f"guard {r['name']} dropped {r['primaryMetric']} by {-r['delta']:.4f} at {r['dimension']} dims, more than "
        f"its maxDrop {r['maxDrop']:g}"
        for r in bad
    )
