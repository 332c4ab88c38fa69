"""Benchmark (a): training throughput (pairs/s) of this trainer against the plain fine-tuning-guide recipe.

Both train the packaged MiniLM with MultipleNegativesRanking wrapped in Matryoshka (384/256/128/64) on the
same pairs with the same hyperparameters (batch 32, seq 128, lr 1e-4, warmup 0.1, linear, seed 42, one
epoch, one checkpoint at the end). The plain recipe is SentenceTransformerTrainer with the no-duplicates
sampler, as the guides write it; ours is ``eft_trainer.training.train`` (length-grouped no-duplicates
batches, no stock model-card data collection, no evaluation during training). Each run is a fresh process;
the runs alternate and the best of each side counts. Prints pairs/s of each and the ratio (target >= 1.0
on CPU). On a GPU it would also print the share of peak FLOP/s; this machine has none.

    python bench/bench_train_throughput.py [--pairs 384] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import model, pairs, rss_mb, run_worker

DIMS = [384, 256, 128, 64]
BATCH = 32
SEQ = 128
LR = 1e-4


def cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def worker(kind: str, n: int) -> None:
    import datasets

    m = model(SEQ)
    rows = pairs(n)
    ds = datasets.Dataset.from_dict({"anchor": [r["anchor"] for r in rows], "positive": [r["positive"] for r in rows]})
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "plain":
            from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
            from sentence_transformers.base.sampler import BatchSamplers
            from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss

            loss = MatryoshkaLoss(m, MultipleNegativesRankingLoss(m), matryoshka_dims=DIMS)
            args = SentenceTransformerTrainingArguments(
                output_dir=tmp,
                num_train_epochs=1,
                per_device_train_batch_size=BATCH,
                learning_rate=LR,
                warmup_steps=0.1,
                lr_scheduler_type="linear",
                seed=42,
                batch_sampler=BatchSamplers.NO_DUPLICATES,
                save_strategy="epoch",
                logging_steps=10,
                report_to="none",
                disable_tqdm=True,
            )
            trainer = SentenceTransformerTrainer(model=m, args=args, train_dataset=ds, loss=loss)
            t0 = time.perf_counter()
            c0 = cpu_seconds()
            trainer.train()
            seconds = time.perf_counter() - t0
            cpu = cpu_seconds() - c0
        else:
            from eft_api.spec import DataFormat, TrainingSpec
            from eft_trainer.training import train

            spec = TrainingSpec(
                matryoshka_dims=DIMS, batch_size=BATCH, learning_rate=LR, epochs=1, seed=42, checkpoint_steps=100000
            )
            c0 = cpu_seconds()
            seconds = train(m, ds, spec, DataFormat.PAIRS, Path(tmp)).seconds
            cpu = cpu_seconds() - c0
    _, peak = rss_mb()
    print(json.dumps({"seconds": seconds, "cpu": cpu, "pairs_per_second": n / seconds, "peak_mb": peak}))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", nargs=2, metavar=("KIND", "N"))
    p.add_argument("--pairs", type=int, default=256)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    if a.worker:
        worker(a.worker[0], int(a.worker[1]))
        return 0
    best: dict[str, dict[str, float]] = {}
    cpu: dict[str, list[float]] = {"plain": [], "ours": []}
    for _ in range(a.repeats):
        for kind in ("plain", "ours"):
            r = run_worker(__file__, kind, str(a.pairs))
            print(
                f"  {kind:5}: {r['pairs_per_second']:.2f} pairs/s ({r['seconds']:.1f}s wall, {r['cpu']:.1f}s CPU), peak RSS {r['peak_mb']:.0f} MB",
                flush=True,
            )
            cpu[kind].append(r["cpu"])
            if kind not in best or r["seconds"] < best[kind]["seconds"]:
                best[kind] = r
    ratio = best["ours"]["pairs_per_second"] / best["plain"]["pairs_per_second"]
    cpu_ratio = min(cpu["plain"]) / min(cpu["ours"])
    print(f"bench_train_throughput: MiniLM, {a.pairs} pairs, batch {BATCH}, seq {SEQ}, MNRL+Matryoshka {DIMS}, CPU")
    print(
        f"  plain guide recipe: {best['plain']['pairs_per_second']:.2f} pairs/s; eft trainer: {best['ours']['pairs_per_second']:.2f} pairs/s"
    )
    print(f"  throughput ratio eft/plain = {ratio:.3f} by best wall time (target >= 1.0 on CPU)")
    print(f"  throughput ratio eft/plain = {cpu_ratio:.3f} by least CPU time (steadier on a shared machine)")
    print("  GPU share of peak FLOP/s: not measured (no GPU on this machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
