"""Benchmark (a): training throughput (pairs/s) of this trainer against the plain fine-tuning-guide recipe.

Both train the packaged MiniLM with MultipleNegativesRanking wrapped in Matryoshka (384/256/128/64) on the
same pairs with the same hyperparameters (batch 32, seq 128, lr 1e-4, warmup 0.1, linear, seed 42, one
epoch, one checkpoint at the end). The plain recipe is SentenceTransformerTrainer with the no-duplicates
sampler, as the guides write it; ours is ``eft_trainer.training.train`` (length-grouped no-duplicates
batches, no stock model-card data collection, no evaluation during training). Each run is a fresh process;
the runs alternate and the best of each side counts. Prints pairs/s of each and the ratio (target >= 1.3
on CPU). On a GPU it would also print the share of peak FLOP/s; this machine has none.

``--levers`` adds variants of ours, each a '+'-joined set of CPU speed levers, measured in the same rotation:
``pad8`` (batches padded to a multiple of 8 tokens), ``bf16`` (CPU bf16 autocast around training), ``compile``
(``torch.compile`` of the transformer, its compile time included), ``t1`` (one intra-op thread instead of one
per core), ``interop1`` (one inter-op thread), ``trainer-bf16`` (what the trainer adopted from these: the spec's
``precision: bf16``, which on a CPU with bf16 instructions is bf16 autocast with batches padded to 8 tokens). ``ours`` also reports the share of
its wall time that tokenising every batch takes (what tokenising once up front could save at most).

    python bench/bench_train_throughput.py [--pairs 256] [--repeats 2] [--levers pad8,bf16,pad8+bf16]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


LEVERS = ("pad8", "bf16", "trainer-bf16", "compile", "t1", "interop1")


def tokenise_seconds(m: object, rows: list[dict[str, str]]) -> float:
    """Wall time of tokenising every batch of both columns as the collator does (padding to the longest)."""
    t0 = time.perf_counter()
    for start in range(0, len(rows), BATCH):
        for col in ("anchor", "positive"):
            m.preprocess([r[col] for r in rows[start : start + BATCH]])  # type: ignore[attr-defined]
    return time.perf_counter() - t0


def apply_levers(m: Any, levers: set[str]) -> None:
    """The levers that change the model before training, as the bench's own (the trainer's is trainer-bf16)."""
    if "pad8" in levers:
        # What the collator's tokenizer call gets: every batch padded to a multiple of 8 tokens.
        kw = m[0].processing_kwargs
        m[0].processing_kwargs = {**kw, "text": {**kw.get("text", {}), "pad_to_multiple_of": 8}}
    if "compile" in levers:
        m[0].model.compile()  # in place: the state dict keeps its names


def worker(kind: str, n: int) -> None:
    import datasets
    import torch

    levers = set(kind.split("+")[1:]) if kind.startswith("ours") else set()
    unknown = levers - set(LEVERS)
    if unknown:
        raise SystemExit(f"unknown levers {sorted(unknown)}; known: {', '.join(LEVERS)}")
    if "t1" in levers:
        torch.set_num_threads(1)
    if "interop1" in levers:
        torch.set_num_interop_threads(1)
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
            from eft_trainer.storage import LocalStore
            from eft_trainer.training import train

            spec = TrainingSpec(
                matryoshka_dims=DIMS,
                batch_size=BATCH,
                learning_rate=LR,
                epochs=1,
                seed=42,
                checkpoint_steps=100000,
                precision="bf16" if "trainer-bf16" in levers else "auto",
            )
            apply_levers(m, levers)
            c0 = cpu_seconds()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled="bf16" in levers):
                seconds = train(
                    m, ds, spec, DataFormat.PAIRS, Path(tmp), storage=LocalStore(Path(tmp) / "store")
                ).seconds
            cpu = cpu_seconds() - c0
    _, peak = rss_mb()
    tok = tokenise_seconds(m, rows) if kind == "ours" else 0.0
    print(
        json.dumps({"seconds": seconds, "cpu": cpu, "pairs_per_second": n / seconds, "peak_mb": peak, "tokenise": tok})
    )


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", nargs=2, metavar=("KIND", "N"))
    p.add_argument("--pairs", type=int, default=256)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--levers", default="", help="comma-separated variants of ours, each a '+'-joined lever set")
    a = p.parse_args()
    if a.worker:
        worker(a.worker[0], int(a.worker[1]))
        return 0
    kinds = ["plain", "ours", *(f"ours+{v}" for v in a.levers.split(",") if v)]
    best: dict[str, dict[str, float]] = {}
    cpu: dict[str, list[float]] = {k: [] for k in kinds}
    tokenise: list[float] = []
    for _ in range(a.repeats):
        for kind in kinds:
            r = run_worker(__file__, kind, str(a.pairs))
            print(
                f"  {kind:12}: {r['pairs_per_second']:.2f} pairs/s ({r['seconds']:.1f}s wall, {r['cpu']:.1f}s CPU), peak RSS {r['peak_mb']:.0f} MB",
                flush=True,
            )
            cpu[kind].append(r["cpu"])
            if kind == "ours":
                tokenise.append(r["tokenise"] / r["seconds"])
            if kind not in best or r["seconds"] < best[kind]["seconds"]:
                best[kind] = r
    print(f"bench_train_throughput: MiniLM, {a.pairs} pairs, batch {BATCH}, seq {SEQ}, MNRL+Matryoshka {DIMS}, CPU")
    print(f"  load average {os.getloadavg()[0]:.1f} at the end; best of {a.repeats} runs each, runs interleaved")
    print(f"  plain guide recipe: {best['plain']['pairs_per_second']:.2f} pairs/s")
    for kind in kinds[1:]:
        ratio = best[kind]["pairs_per_second"] / best["plain"]["pairs_per_second"]
        cpu_ratio = min(cpu["plain"]) / min(cpu[kind])
        print(
            f"  {kind:12}: {best[kind]['pairs_per_second']:.2f} pairs/s, ratio to plain {ratio:.3f} by best wall time,"
            f" {cpu_ratio:.3f} by least CPU time (target >= 1.3 on CPU)"
        )
    print(f"  tokenising every batch: {min(tokenise):.1%} of ours' training wall time (the most tokenising once saves)")
    print("  GPU share of peak FLOP/s: not measured (no GPU on this machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
