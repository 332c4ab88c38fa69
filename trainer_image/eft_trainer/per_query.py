"""Per-query evidence: the queries the fine-tuned model ranks much worse and much better than the base.

From the per-query metrics an evaluation already keeps (no second search): the rank of the first relevant
passage is ``1 / mrr@k`` at the largest cut-off k (beyond k it is unknown: ``None``, shown as ``>k``); the
change is the per-query primary metric, fine-tuned minus base. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eft_trainer.data import IRSet
from eft_trainer.evaluation import EvalResult

TOP = 20


def rank(mrr: float) -> int | None:
    """The rank of the first relevant passage from its reciprocal rank (None: beyond the cut-off)."""
    return round(1 / mrr) if mrr > 0 else None


def movers(
    irset: IRSet,
    base: EvalResult,
    tuned: EvalResult,
    dim: int,
    pm: str,
    k_values: Sequence[int],
    top: int = TOP,
) -> dict[str, Any]:
    """``worse`` and ``better``: at most ``top`` queries each, largest change first, with ranks before/after."""
    k = max(k_values)
    mrr = f"mrr@{k}"
    b, t = base.per_query[dim], tuned.per_query[dim]
    rows: list[dict[str, Any]] = []
    for i, (qid, text) in enumerate(irset.queries.items()):
        delta = t[pm][i] - b[pm][i]
        if delta == 0:
            continue
        rows.append(
            {
                "id": qid,
                "query": text[:200],
                "relevant": sorted(irset.relevant[qid])[0],
                "rankBefore": rank(b[mrr][i]),
                "rankAfter": rank(t[mrr][i]),
                "before": b[pm][i],
                "after": t[pm][i],
                "delta": delta,
            }
        )
    worse = sorted((r for r in rows if r["delta"] < 0), key=lambda r: (r["delta"], r["id"]))[:top]
    better = sorted((r for r in rows if r["delta"] > 0), key=lambda r: (-r["delta"], r["id"]))[:top]
    return {"cutoff": k, "changed": len(rows), "queries": len(irset.queries), "worse": worse, "better": better}


def markdown(name: str, section: dict[str, Any], pm: str) -> list[str]:
    """The report's lines for one set: a table of the worse queries, then the better ones."""
    k = section["cutoff"]
    lines = [f"### {name}: {section['changed']} of {section['queries']} queries changed {pm}", ""]
    for which in ("worse", "better"):
        rows = section[which]
        lines.append(f"Ranked {which} by the fine-tuned model ({len(rows)} shown):")
        lines.append("")
        if not rows:
            lines += ["(none)", ""]
            continue
        lines += ["| query | relevant passage | rank before | rank after | change |", "|---|---|---|---|---|"]
        for r in rows:
            before = r["rankBefore"] or f">{k}"
            after = r["rankAfter"] or f">{k}"
            query = r["query"].replace("|", "\\|")
            lines.append(f"| {query} | {r['relevant']} | {before} | {after} | {r['delta']:+.3f} |")
        lines.append("")
    return lines
