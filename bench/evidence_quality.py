"""Measure the merge against forgetting and a baseline leaderboard on the Python-docs sample (``make data``).

The sample's library-reference pairs are the training data (10% held out for evaluation); its FAQ pairs
(the questions ending in ``?``) are a guard with ``maxDrop`` 0. One run of the real trainer
(``eft_trainer.entrypoint.run_job``, data read through ``EFT_DATA_ROOT``) with ``training.merge`` searching
the ratio, and the packaged MiniLM at a shorter ``maxSeqLength`` as a model baseline. Prints the merge curve
(in-domain and FAQ ndcg@10 per ratio), the chosen ratio, the in-domain gain kept and the guard figure
restored, and the leaderboard; writes the report's Markdown to ``--out``.

    python bench/evidence_quality.py [--rows 0] [--epochs 1] [--lr 1e-4] [--out /tmp/evidence-report.md]

docs/evidence.md quotes ``--rows 1200`` (the demo's size) at the default learning rate and at ``--lr 1e-3`` (a
fine-tuning that forgets the FAQ, repaired by the merge), and ``--rows 300``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, MINILM_HUB_ID, bench_cfg, local_trainer_setup, run_with_report, sample_spec


def split_sample(tmp: Path, rows: int) -> tuple[int, int]:
    """library.jsonl (training) and faq.jsonl (the guard) beside the sample under EFT_DATA_ROOT."""
    lines = [json.loads(x) for x in DATA.read_text(encoding="utf-8").splitlines() if x.strip()]
    faq = [r for r in lines if r["question"].endswith("?")]
    lib = [r for r in lines if not r["question"].endswith("?")][: rows or None]
    root = tmp / "data" / "sample" / "python-docs"
    (root / "library.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lib), encoding="utf-8")
    (root / "faq.jsonl").write_text("".join(json.dumps(r) + "\n" for r in faq), encoding="utf-8")
    return len(lib), len(faq)


def spec(epochs: float, lr: float, ratios: list[float]) -> dict[str, Any]:
    doc = sample_spec(MINILM_HUB_ID, epochs=epochs, learningRate=lr, merge={"enabled": True, "ratios": ratios})
    doc["data"]["train"]["uri"] = "s3://sample/python-docs/library.jsonl"
    doc["evaluation"] = {
        "kValues": [1, 10],
        "primaryMetric": "ndcg@10",
        "gate": {"minGain": 0.0},
        "guards": [
            {
                "name": "faq",
                "uri": "s3://sample/python-docs/faq.jsonl",
                "columns": {"anchor": "question", "positive": "answer"},
                "maxDrop": 0.0,
            }
        ],
        "baselines": [{"name": "minilm-seq64", "model": {"base": MINILM_HUB_ID, "maxSeqLength": 64}}],
    }
    return doc


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=0, help="library pairs to train on (0: all)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--ratios", default="", help="comma-separated merge ratios (default: searched)")
    p.add_argument("--out", type=Path, default=Path("/tmp/evidence-report.md"))
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="eft-evidence-"))
    models = local_trainer_setup(tmp)
    n_lib, n_faq = split_sample(tmp, a.rows)
    ratios = [float(r) for r in a.ratios.split(",") if r]
    t0 = time.perf_counter()
    msg, rep = run_with_report(bench_cfg("evidence", spec(a.epochs, a.lr, ratios), tmp / "work", models))
    seconds = time.perf_counter() - t0
    from eft_trainer.evidence import markdown

    a.out.write_text("\n".join(markdown(rep)), encoding="utf-8")
    merge = rep["merge"]
    base_faq = rep["guards"][0]["base"] if rep.get("guards") else None
    print(f"library pairs {n_lib}, FAQ guard pairs {n_faq}; {seconds:.0f}s; outcome {msg.outcome} {msg.reason}")
    print(f"base: in-domain {rep['headline']['base']:.4f}, faq {base_faq}")
    for pt in merge["points"]:
        print(f"ratio {pt['ratio']:<6g} in-domain {pt['primary']:.4f} faq {pt['guards'].get('faq', 0):.4f} "
              f"guards {'pass' if pt['guardsPassed'] else 'fail'} gate {'pass' if pt['gatePassed'] else 'fail'}")  # fmt: skip
    print(merge["summary"])
    for r in rep.get("leaderboard", {}).get("sets", {}).get("eval", []):
        d = r["finetunedMinus"]
        print(f"leaderboard {r['name']:<14} {r['primary']:.4f}  fine-tuned minus {d['gain']:+.4f} ({d['low']:+.4f} .. {d['high']:+.4f})")  # fmt: skip
    print(json.dumps({"message": msg.message}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
