"""Benchmark (b, c): this trainer's evaluator against the stock InformationRetrievalEvaluator.

The stock evaluator is run once per dimension (``truncate_dim=d``), as the fine-tuning guides do; ours
encodes once and slices. Same model, corpus, queries and k values; each side runs in its own process so
that its peak memory (VmHWM over the RSS before evaluating) is its own. Prints the time ratio (target at
most 0.35), the peak memory of each, and checks that every metric agrees within 1e-4.

    python bench/bench_eval.py [--queries 150] [--corpus 900] [--seq 64]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import model, pairs, rss_mb, run_worker

DIMS = [384, 256, 128, 64]
KS = [1, 3, 5, 10]


def irset(n_queries: int, n_corpus: int):  # type: ignore[no-untyped-def]
    from eft_api.spec import EvalData
    from eft_trainer.data import ir_from_pairs

    rows = pairs(max(n_corpus, n_queries))
    return ir_from_pairs(rows[:n_queries], rows[n_queries:n_corpus], EvalData(max_distractors=n_corpus))


def worker(kind: str, n_queries: int, n_corpus: int, seq: int) -> None:
    m = model(seq)
    ir = irset(n_queries, n_corpus)
    m.encode(["warm up"] * 4)
    before, _ = rss_mb()
    t0 = time.perf_counter()
    metrics: dict[str, dict[str, float]] = {}
    if kind == "ours":
        from eft_trainer.evaluation import evaluate_model

        res = evaluate_model(m, ir, DIMS, KS, batch_size=64)
        metrics = {str(d): v for d, v in res.metrics.items()}
    else:
        from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

        for d in DIMS:
            ev = InformationRetrievalEvaluator(
                ir.queries,
                ir.corpus,
                ir.relevant,
                mrr_at_k=KS,
                ndcg_at_k=KS,
                accuracy_at_k=KS,
                precision_recall_at_k=KS,
                map_at_k=KS,
                truncate_dim=d,
                batch_size=64,
                write_csv=False,
            )
            got = ev(m)
            metrics[str(d)] = {
                f"{n}@{k}": float(next(v for key, v in got.items() if key.endswith(f"cosine_{n}@{k}")))
                for n in ("ndcg", "mrr", "recall", "map", "accuracy")
                for k in KS
            }
    seconds = time.perf_counter() - t0
    _, peak = rss_mb()
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "extra_mb": peak - before, "metrics": metrics}))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", nargs=4, metavar=("KIND", "Q", "C", "SEQ"))
    p.add_argument("--queries", type=int, default=150)
    p.add_argument("--corpus", type=int, default=900)
    p.add_argument("--seq", type=int, default=64)
    a = p.parse_args()
    if a.worker:
        worker(a.worker[0], int(a.worker[1]), int(a.worker[2]), int(a.worker[3]))
        return 0
    args = (str(a.queries), str(a.corpus), str(a.seq))
    stock = run_worker(__file__, "stock", *args)
    ours = run_worker(__file__, "ours", *args)
    worst = max(
        abs(ours["metrics"][d][m] - stock["metrics"][d][m]) for d in stock["metrics"] for m in stock["metrics"][d]
    )
    ratio = ours["seconds"] / stock["seconds"]
    print(f"bench_eval: MiniLM, {a.queries} queries, corpus {a.corpus}, seq {a.seq}, dims {DIMS}, k {KS}")
    print(
        f"  stock InformationRetrievalEvaluator x{len(DIMS)} dims: {stock['seconds']:.1f}s, peak RSS {stock['peak_mb']:.0f} MB (+{stock['extra_mb']:.0f} MB)"
    )
    print(
        f"  eft evaluator (encode once, slice):  {ours['seconds']:.1f}s, peak RSS {ours['peak_mb']:.0f} MB (+{ours['extra_mb']:.0f} MB)"
    )
    print(
        f"  time ratio eft/stock = {ratio:.3f} (target <= 0.35); largest metric difference {worst:.2e} (must be <= 1e-4)"
    )
    ok = worst <= 1e-4
    if not ok:
        print("  FAILED: metrics differ")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
