"""A fast information-retrieval evaluator for every Matryoshka dimension at once.

Queries and corpus are encoded ONCE per model at the full dimension; each dimension is a slice of those
embeddings, re-normalised, scored by cosine (a dot product of unit vectors) in chunks with a running top-k,
so that a 100,000-passage corpus needs a few hundred MB beyond its embeddings. The metric math is pure
(:func:`query_metrics`) and matches sentence-transformers' ``InformationRetrievalEvaluator`` (ties broken by
ascending corpus id).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eft_trainer.data import IRSet

METRICS = ("ndcg", "mrr", "recall", "map", "accuracy")


def query_metrics(ranked: Sequence[str], relevant: set[str], k_values: Sequence[int]) -> dict[str, float]:
    """Metrics of one query from its ranked corpus ids (best first) and its relevant ids (binary relevance)."""
    out: dict[str, float] = {}
    hits = [1 if cid in relevant else 0 for cid in ranked]
    n_rel = len(relevant)
    for k in k_values:
        top = hits[:k]
        n_hit = sum(top)
        out[f"accuracy@{k}"] = 1.0 if n_hit else 0.0
        out[f"recall@{k}"] = n_hit / n_rel if n_rel else 0.0
        first = next((i for i, h in enumerate(top) if h), None)
        out[f"mrr@{k}"] = 1.0 / (first + 1) if first is not None else 0.0
        dcg = sum(h / math.log2(i + 2) for i, h in enumerate(top))
        idcg = sum(1.0 / math.log2(i + 2) for i in range(min(n_rel, k)))
        out[f"ndcg@{k}"] = dcg / idcg if idcg else 0.0
        found = 0
        ap = 0.0
        for i, h in enumerate(top):
            if h:
                found += 1
                ap += found / (i + 1)
        out[f"map@{k}"] = ap / min(k, n_rel) if n_rel else 0.0
    return out


def mean_metrics(per_query: Sequence[dict[str, float]]) -> dict[str, float]:
    if not per_query:
        return {}
    return {name: float(np.mean([q[name] for q in per_query])) for name in per_query[0]}


@dataclass
class EvalResult:
    """Mean metrics per dimension, and the per-query values of every metric (for the bootstrap)."""

    metrics: dict[int, dict[str, float]]
    per_query: dict[int, dict[str, list[float]]] = field(default_factory=dict)
    seconds: float = 0.0
    encode_seconds: float = 0.0
    #: The corpus embeddings (full dimension), kept so that a method with a frozen document side reuses them.
    corpus_embeddings: np.ndarray | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {str(d): m for d, m in self.metrics.items()}


def top_k(
    q: np.ndarray, c: np.ndarray, k: int, exclude: dict[int, set[int]] | None = None, chunk: int = 32768
) -> np.ndarray:
    """Indices of the k best corpus rows per query by dot product (best first, ties by lower index)."""
    import torch

    qt = torch.from_numpy(q)
    n_q, n_c = q.shape[0], c.shape[0]
    k = min(k, n_c)
    best_s = torch.full((n_q, 0), -math.inf)
    best_i = torch.zeros((n_q, 0), dtype=torch.long)
    for start in range(0, n_c, chunk):
        ct = torch.from_numpy(c[start : start + chunk])
        s = qt @ ct.T
        if exclude:
            for qi, cis in exclude.items():
                for ci in cis:
                    if start <= ci < start + ct.shape[0]:
                        s[qi, ci - start] = -math.inf
        kk = min(k, s.shape[1])
        cs, ci_ = torch.topk(s, kk, dim=1)
        best_s = torch.cat([best_s, cs], dim=1)
        best_i = torch.cat([best_i, ci_ + start], dim=1)
        if best_s.shape[1] > k:
            best_s, sel = torch.topk(best_s, k, dim=1)
            best_i = torch.gather(best_i, 1, sel)
    # Stable order: score descending, then corpus index ascending (as the stock evaluator sorts).
    s_np = best_s.numpy()
    i_np = best_i.numpy()
    order = np.lexsort((i_np, -s_np), axis=1)
    return np.take_along_axis(i_np, order, axis=1)


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def evaluate_embeddings(
    q_emb: np.ndarray,
    c_emb: np.ndarray,
    irset: IRSet,
    dims: Sequence[int],
    k_values: Sequence[int],
    query_chunk: int = 1024,
) -> EvalResult:
    """Metrics per dimension from full-dimension embeddings (rows in irset.queries / irset.corpus order)."""
    qids = list(irset.queries)
    cids = list(irset.corpus)
    cindex = {cid: i for i, cid in enumerate(cids)}
    exclude = {qi: {cindex[c] for c in irset.exclude.get(qid, ()) if c in cindex} for qi, qid in enumerate(qids)}
    exclude = {qi: s for qi, s in exclude.items() if s}
    max_k = max(k_values)
    metrics: dict[int, dict[str, float]] = {}
    per_query: dict[int, dict[str, list[float]]] = {}
    for d in dims:
        qd = _normalise(q_emb[:, :d])
        cd = _normalise(c_emb[:, :d])
        rows: list[dict[str, float]] = []
        for qs in range(0, len(qids), query_chunk):
            part_ex = {qi - qs: s for qi, s in exclude.items() if qs <= qi < qs + query_chunk}
            idx = top_k(qd[qs : qs + query_chunk], cd, max_k, part_ex)
            for j, ranked in enumerate(idx):
                qid = qids[qs + j]
                rows.append(query_metrics([cids[i] for i in ranked], irset.relevant[qid], k_values))
        metrics[d] = mean_metrics(rows)
        per_query[d] = {name: [r[name] for r in rows] for name in (rows[0] if rows else {})}
    return EvalResult(metrics, per_query)


def encode(
    model: Any, texts: Sequence[str], batch_size: int, progress: bool = False, task: str | None = None
) -> np.ndarray:
    """Embeddings of ``texts``; ``task`` "query" or "document" goes through ``encode_query`` / ``encode_document``
    (the model's query or document prompt, and its Router's route, such as a query adapter's)."""
    method = {"query": "encode_query", "document": "encode_document"}.get(task or "", "encode")
    emb = getattr(model, method, model.encode)(
        list(texts),
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=False,
        show_progress_bar=progress,
    )
    return np.asarray(emb, dtype=np.float32)


def evaluate_model(
    model: Any,
    irset: IRSet,
    dims: Sequence[int],
    k_values: Sequence[int],
    batch_size: int = 128,
    progress: bool = False,
    corpus_embeddings: np.ndarray | None = None,
) -> EvalResult:
    """Encode queries and corpus once, then score every dimension from slices (see module docstring).

    Queries go through the model's query route, the corpus through its document route. ``corpus_embeddings``
    (from an earlier evaluation of a model with the same document side) are used instead of encoding again.
    """
    t0 = time.perf_counter()
    q_emb = encode(model, list(irset.queries.values()), batch_size, progress, task="query")
    if corpus_embeddings is None:
        corpus_embeddings = encode(model, list(irset.corpus.values()), batch_size, progress, task="document")
    c_emb = corpus_embeddings
    t1 = time.perf_counter()
    result = evaluate_embeddings(q_emb, c_emb, irset, dims, k_values)
    result.corpus_embeddings = c_emb
    result.encode_seconds = t1 - t0
    result.seconds = time.perf_counter() - t0
    return result


def dimensions(full_dim: int, matryoshka_dims: Sequence[int]) -> list[int]:
    """The full dimension and every Matryoshka dimension below it, largest first."""
    return sorted({full_dim, *(d for d in matryoshka_dims if d <= full_dim)}, reverse=True)
