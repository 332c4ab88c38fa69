"""Measure base vs full fine-tuning vs queryAdapter on the Python-docs sample (``make data``), one run each.

Each method runs the real trainer (``eft_trainer.entrypoint.run_job``, data read from a local folder through
``EFT_DATA_ROOT``) on the same spec but for ``training.method`` (and, for the adapter, ``epochs``), so the
held-out split, the evaluation corpus and the base measurement are the same. Prints, per run, the
primary metric at 384 dims with the paired-bootstrap 95% CI the report computes, the training time and
whether the corpus embeddings were recomputed.

    python bench/methods_quality.py [--runs full,queryAdapter,queryAdapter:10,queryAdapter-mlp:10]

A run named ``tsdae+<method>`` pre-trains first (``training.pretrain``, TSDAE on at most
``--pretrain-sentences`` sentences of the training rows), then trains the method with the same settings:

    python bench/methods_quality.py --runs full,tsdae+full --epochs 0.25 --pretrain-sentences 1000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_cfg, headline_row, local_sample, run_captured, sample_spec

HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def spec(method: str, epochs: float, kind: str, pretrain: dict[str, Any] | None = None) -> dict[str, Any]:
    doc = sample_spec(HUB_ID, method=method, adapter={"kind": kind}, matryoshkaDims=[384, 128], epochs=epochs)
    if pretrain is not None:
        doc["training"]["pretrain"] = pretrain
    return doc


def run(
    name: str, method: str, epochs: float, kind: str, work: Path, models: Path, pretrain: dict[str, Any] | None = None
) -> dict[str, Any]:
    doc = spec(method, epochs, kind, pretrain)
    return run_spec(name.lower().replace(":", "-").replace("+", "-"), doc, work, models)


def run_spec(name: str, doc: dict[str, Any], work: Path, models: Path, max_steps: int = -1) -> dict[str, Any]:
    """One run of the trainer on the spec ``doc``; its report (kept from build_report: nothing is published)."""
    return run_captured(bench_cfg(name, doc, work, models), max_steps)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", default="full,queryAdapter,queryAdapter:10,queryAdapter-mlp:10")
    p.add_argument("--epochs", type=float, default=1.0, help="epochs of a run that names none (method:N)")
    p.add_argument("--pretrain-sentences", type=int, default=1000, help="pretrain.maxSentences of tsdae+ runs")
    a = p.parse_args()
    tmp, models = local_sample("eft-methods-")
    rows = []
    for item in a.runs.split(","):
        head, _, ep = item.partition(":")
        stage, plus, head = head.rpartition("+")
        pretrain = {"method": stage, "maxSentences": a.pretrain_sentences} if plus else None
        method, _, kind = head.partition("-")
        rep = run(item, method, float(ep or a.epochs), kind or "linear", tmp / "work", models, pretrain)
        t = rep["training"]
        row = {
            **headline_row(item, rep),
            "trainSeconds": rep["timings"]["train"],
            "corpusReused": rep["data"].get("corpusEmbeddingsReused"),
            "evalFinetunedSeconds": rep["timings"]["evaluateFinetuned"],
            "pretrain": rep.get("pretrain"),
            "details": {k: v for k, v in t.items() if k in ("embedSeconds", "adapterTrainSeconds", "epochsRun")},
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| run | ndcg@10 base | ndcg@10 after | gain (95% CI) | train s | corpus re-embedded |")
    print("|---|---:|---:|---|---:|---|")
    for r in rows:
        print(
            f"| {r['run']} | {r['base']:.4f} | {r['tuned']:.4f} | {r['gain']:+.4f} ({r['low']:+.4f} .. "
            f"{r['high']:+.4f}) | {r['trainSeconds']:.0f} | {'no' if r['corpusReused'] else 'yes'} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
