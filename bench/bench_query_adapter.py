"""Benchmark: training time of ``method: queryAdapter`` against full fine-tuning, on the same data, one run.

Both start from the packaged MiniLM on the same Python-docs pairs (batch 32, seq 128, MultipleNegativesRanking,
seed 42), each in a fresh process. Full fine-tuning is ``eft_trainer.training.train`` for one epoch. The query
adapter (linear, on the query side) is ``eft_trainer.methods.query_adapter.QueryAdapter.train`` for
``--adapter-epochs`` epochs: it embeds every training text ONCE with the frozen base model, then trains on
those cached embeddings. Prints the seconds of each part and two ratios:

* per epoch: one epoch of full fine-tuning against one epoch of adapter training (target >= 20x);
* whole run: one epoch of full fine-tuning against the adapter's embedding pass plus all its epochs
  (the embedding pass is a forward pass over every text, so this ratio is bounded by forward vs
  forward+backward cost and is far smaller).

    python bench/bench_query_adapter.py [--pairs 512] [--adapter-epochs 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import model, pairs, rss_mb, run_worker

BATCH = 32
SEQ = 128


def worker(kind: str, n: int, epochs: int) -> None:
    import datasets

    from eft_api.spec import DataFormat, TrainingSpec
    from eft_trainer.storage import LocalStore

    m = model(SEQ)
    rows = pairs(n)
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "full":
            from eft_trainer.training import train

            ds = datasets.Dataset.from_dict(
                {"anchor": [r["anchor"] for r in rows], "positive": [r["positive"] for r in rows]}
            )
            spec = TrainingSpec(batch_size=BATCH, learning_rate=1e-4, epochs=1, seed=42, checkpoint_steps=100000)
            seconds = train(m, ds, spec, DataFormat.PAIRS, Path(tmp), storage=LocalStore(Path(tmp) / "store")).seconds
            result = {"epoch_seconds": seconds, "embed_seconds": 0.0, "train_seconds": seconds}
        else:
            from eft_api.contract import TrainerSettings, build_run_config
            from eft_api.spec import parse_spec
            from eft_trainer.methods import TrainInput
            from eft_trainer.methods.query_adapter import QueryAdapter

            spec_doc = {
                "model": {"base": "sentence-transformers/all-MiniLM-L6-v2", "maxSeqLength": SEQ},
                "data": {"train": {"uri": "s3://bench/pairs.jsonl", "format": "pairs"}},
                "training": {"method": "queryAdapter", "batchSize": BATCH, "epochs": epochs, "seed": 42},
                "evaluation": {"batchSize": BATCH},
                "output": {"uri": "s3://bench/out/"},
            }
            cfg = build_run_config(
                namespace="bench",
                name="qa",
                uid="u",
                generation=1,
                spec=parse_spec(spec_doc),
                settings=TrainerSettings(work_dir=tmp),
            )
            trained = QueryAdapter().train(TrainInput(m, cfg, rows, LocalStore(Path(tmp) / "store"), Path(tmp)))
            d = trained.details
            result = {
                "epoch_seconds": d["adapterTrainSeconds"] / d["epochsRun"],
                "embed_seconds": d["embedSeconds"],
                "train_seconds": d["adapterTrainSeconds"],
                "epochs": d["epochsRun"],
                "texts_embedded": d["textsEmbedded"],
            }
    _, peak = rss_mb()
    print(json.dumps({**result, "peak_mb": peak}))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", nargs=3, metavar=("KIND", "N", "EPOCHS"))
    p.add_argument("--pairs", type=int, default=512)
    p.add_argument("--adapter-epochs", type=int, default=10)
    a = p.parse_args()
    if a.worker:
        worker(a.worker[0], int(a.worker[1]), int(a.worker[2]))
        return 0
    full = run_worker(__file__, "full", str(a.pairs), "1")
    qa = run_worker(__file__, "adapter", str(a.pairs), str(a.adapter_epochs))
    per_epoch = full["epoch_seconds"] / qa["epoch_seconds"]
    whole = full["epoch_seconds"] / (qa["embed_seconds"] + qa["train_seconds"])
    print(f"bench_query_adapter: MiniLM, {a.pairs} pairs, batch {BATCH}, seq {SEQ}, MNRL, CPU, one run")
    print(f"  full fine-tuning: {full['epoch_seconds']:.1f}s per epoch, peak RSS {full['peak_mb']:.0f} MB")
    print(
        f"  queryAdapter: embedded {qa['texts_embedded']} texts once in {qa['embed_seconds']:.1f}s, then "
        f"{qa['epoch_seconds']:.3f}s per epoch ({qa['epochs']} epochs), peak RSS {qa['peak_mb']:.0f} MB"
    )
    print(f"  per epoch: queryAdapter is {per_epoch:.0f}x faster than full fine-tuning (target >= 20x)")
    print(f"  whole run (embedding pass + {qa['epochs']} adapter epochs vs 1 full epoch): {whole:.1f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
