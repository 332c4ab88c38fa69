"""Measure ``method: distillation`` on the Python-docs sample (``make data``): one run.

The only real embedding model here is all-MiniLM-L6-v2, so the run distils it into a smaller, faster model
built from it: MiniLM cut to 3 of its 6 layers (layers 0, 2 and 4 kept, as the sentence-transformers
model-distillation example cuts its student). The teacher is the whole MiniLM. The real trainer runs
(``eft_trainer.entrypoint.run_job``, data from a local folder through ``EFT_DATA_ROOT``) and the report
gives base (the cut model untrained) vs student, the paired-bootstrap 95% CI, and the teacher on the same
evaluation.

    python bench/distillation_quality.py [--epochs 1] [--rows 400] [--max-seq-length 128]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MINILM_HUB_ID, bench_cfg, local_trainer_setup, run_captured, sample_spec

TEACHER = MINILM_HUB_ID
STUDENT = "local/all-MiniLM-L3-cut"
KEEP_LAYERS = [0, 2, 4]


def spec(epochs: float, max_seq_length: int) -> dict[str, Any]:
    out = sample_spec(
        STUDENT,
        method="distillation",
        teacher={"base": TEACHER, "maxSeqLength": max_seq_length},
        loss="MSE",
        epochs=epochs,
    )
    out["model"]["maxSeqLength"] = max_seq_length
    return out


def cut_student(teacher_dir: Path, dest: Path) -> None:
    """MiniLM with only the layers in KEEP_LAYERS (a smaller, faster model of the same dimension)."""
    import torch
    from sentence_transformers import SentenceTransformer

    m = SentenceTransformer(str(teacher_dir), device="cpu")
    bert = m[0].auto_model
    bert.encoder.layer = torch.nn.ModuleList([bert.encoder.layer[i] for i in KEEP_LAYERS])
    bert.config.num_hidden_layers = len(KEEP_LAYERS)
    m.save(str(dest))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--rows", type=int, default=0, help="use the first ROWS pairs of the sample (0: all)")
    p.add_argument("--max-seq-length", type=int, default=128)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="eft-distill-"))
    models = local_trainer_setup(tmp, a.rows)
    cut_student(models / TEACHER, models / STUDENT)
    cfg = bench_cfg("distillation", spec(a.epochs, a.max_seq_length), tmp / "work", models)
    captured = run_captured(cfg)
    h, b, t, tr = captured["headline"], captured["headline"]["bootstrap"], captured["teacher"], captured["training"]
    gap = t["studentMinusTeacher"]
    row = {
        "base": h["base"],
        "student": h["finetuned"],
        "gain": [h["gain"], b["low"], b["high"]],
        "teacher": t["primary"],
        "studentMinusTeacher": [gap["gain"], gap["low"], gap["high"]],
        "queries": b["queries"],
        "timings": captured["timings"],
        "training": {k: tr[k] for k in ("steps", "textsDistilled", "teacherEmbedSeconds", "seconds")},
        "data": {k: captured["data"][k] for k in ("trainRows", "evalQueries", "evalCorpus")},
        "args": vars(a),
    }
    print(json.dumps(row, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
