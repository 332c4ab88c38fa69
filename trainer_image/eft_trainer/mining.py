"""Hard-negative mining with the base model (sentence-transformers' ``mine_hard_negatives``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eft_api.spec import HardNegatives


def mine(
    model: Any, records: Sequence[dict[str, Any]], spec: HardNegatives, batch_size: int = 64
) -> list[dict[str, Any]]:
    """(anchor, positive, negative_1..n) rows: each anchor gets ``count`` passages the base model ranks high
    that are not its positive, skipping any scored within ``margin`` (relative) of the positive (likely false
    negatives). Anchors for which too few candidates survive keep fewer rows (dropped from the mined set)."""
    import datasets
    from sentence_transformers.util import mine_hard_negatives

    ds = datasets.Dataset.from_dict(
        {"anchor": [r["anchor"] for r in records], "positive": [r["positive"] for r in records]}
    )
    extra = sorted({r[k] for r in records for k in r if k.startswith("negative_") and isinstance(r[k], str)})
    corpus = sorted({r["positive"] for r in records} | set(extra))
    mined = mine_hard_negatives(
        ds,
        model,
        anchor_column_name="anchor",
        positive_column_name="positive",
        corpus=corpus,
        range_max=max(spec.range_max, spec.count + 1),
        relative_margin=spec.margin,
        num_negatives=spec.count,
        sampling_strategy="top",
        output_format="n-tuple",
        batch_size=batch_size,
        verbose=False,
    )
    cols = mined.column_names
    out = []
    for row in mined:
        rec = {"anchor": row[cols[0]], "positive": row[cols[1]]}
        for i, c in enumerate(cols[2:], start=1):
            rec[f"negative_{i}"] = row[c]
        out.append(rec)
    return out
