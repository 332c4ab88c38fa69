"""Measure the query-side methods against full fine-tuning, side by side, one run each on one machine:
base, ``full``, ``queryAdapter`` (today's linear recipe; linear and mlp with hard negatives, learning-rate and
epoch choice by the internal validation split) and ``queryEncoder`` (two towers).

Every run is the real trainer (``eft_trainer.entrypoint.run_job``, data from a local folder through
``EFT_DATA_ROOT``) on the same spec but for ``training``, so the held-out split, the evaluation corpus and the
base measurement are the same. Printed per run: NDCG@10 at 384 dims with the report's paired-bootstrap 95%
CI, the share of full fine-tuning's gain kept, training and evaluation seconds, and what serving costs.

    python bench/query_side_quality.py [--corpus python-docs|stdlib] [--rows N] [--runs full,queryEncoder-hn,...]

Corpora: ``python-docs`` is the sample (``make data``: Python FAQ and library-reference sections); ``stdlib``
pairs each public function or class of the installed standard library with the first paragraph of its
docstring (built here, from the running Python: a corpus no recipe was tuned on).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MINILM_HUB_ID, bench_cfg, headline_row, local_sample, run_captured, sample_spec

HN = {"enabled": True, "count": 3, "margin": 0.05}
#: The validation split with early stopping (and, for the adapter, the learning-rate search).
VAL = {"validationSplit": 0.1}
#: Today's adapter (as in the README's table): linear, 10 epochs, no validation split, no learning-rate search.
TODAY = {"validationSplit": 0.0}  # (the default)
RECIPES: dict[str, dict[str, Any]] = {
    "full": {"method": "full", "epochs": 1},
    "queryAdapter": {
        "method": "queryAdapter",
        "epochs": 10,
        "earlyStopping": TODAY,
        "adapter": {"learningRateSearch": False},
    },
    "queryAdapter-hn": {"method": "queryAdapter", "epochs": 30, "hardNegatives": HN, "earlyStopping": VAL},
    #: Today's recipe (every row trains 10 epochs, no validation split) with hard negatives.
    "queryAdapter-hn-today": {
        "method": "queryAdapter",
        "epochs": 10,
        "hardNegatives": HN,
        "earlyStopping": TODAY,
        "adapter": {"learningRateSearch": False},
    },
    "queryAdapter-val": {"method": "queryAdapter", "epochs": 30, "earlyStopping": VAL},
    "queryAdapter-mlp": {
        "method": "queryAdapter",
        "epochs": 30,
        "adapter": {"kind": "mlp", "hiddenDim": 512},
        "earlyStopping": VAL,
    },
    "queryAdapter-mlp-hn": {
        "method": "queryAdapter",
        "epochs": 30,
        "adapter": {"kind": "mlp", "hiddenDim": 512},
        "hardNegatives": HN,
        "earlyStopping": VAL,
    },
    "queryEncoder": {"method": "queryEncoder", "epochs": 2, "earlyStopping": {**VAL, "patience": 1}},
    "queryEncoder-hn": {
        "method": "queryEncoder",
        "epochs": 2,
        "hardNegatives": HN,
        "earlyStopping": {**VAL, "patience": 1},
    },
}


def stdlib_rows(limit: int) -> list[dict[str, str]]:
    """(qualified name, first docstring paragraph) of the installed standard library's public callables."""
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for mod_name in sorted(sys.stdlib_module_names):
        if mod_name.startswith("_") or mod_name in {"antigravity", "this", "idlelib", "tkinter", "turtle"}:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mod = importlib.import_module(mod_name)
        except Exception:  # a module this Python lacks (a platform's): skipped
            continue
        for name, obj in sorted(vars(mod).items()):
            if name.startswith("_") or not callable(obj) or getattr(obj, "__module__", None) != mod_name:
                continue
            para = " ".join((inspect.getdoc(obj) or "").split("\n\n")[0].split())
            if len(para) >= 50 and para not in seen:
                seen.add(para)
                out.append({"question": f"{mod_name}.{name}", "answer": para})
    return out[:limit]


def setup(corpus: str, rows: int) -> tuple[Path, Path]:
    tmp, models = local_sample(f"eft-query-side-{corpus}-", rows)
    if corpus == "stdlib":
        target = tmp / "data" / "sample" / "python-docs" / "pairs.jsonl"
        target.unlink()
        target.write_text("".join(json.dumps(r) + "\n" for r in stdlib_rows(rows or 100_000)), encoding="utf-8")
    return tmp, models


def serving(name: str, rep: dict[str, Any]) -> str:
    t = rep["training"]
    if name.startswith("queryEncoder"):
        return f"2 encoders in memory ({t['queryTowerParameters'] / 1e6:.1f}M query tower); 1 pass per query"
    if name.startswith("queryAdapter"):
        return f"1 encoder + adapter ({t['adapterParameters'] / 1e3:.0f}k)"
    return "1 encoder; every document re-embedded first"


def row(name: str, rep: dict[str, Any], wall: float) -> dict[str, Any]:
    t, tim = rep["training"], rep["timings"]
    keep = (
        "epochsRun",
        "bestEpoch",
        "learningRate",
        "validationNdcg@10",
        "hardNegativeColumns",
        "embedSeconds",
        "mineSeconds",
    )
    return {
        **headline_row(name, rep),
        "trainSeconds": tim["train"] + tim.get("mine", 0.0),
        "evalSeconds": tim["evaluateFinetuned"],
        "wallSeconds": wall,
        "reindex": rep["index"]["reindexRequired"],
        "serving": serving(name, rep),
        "details": {k: t[k] for k in keep if k in t},
    }


def table(rows: list[dict[str, Any]]) -> str:
    full = next((r["gain"] for r in rows if r["run"] == "full"), None)
    lines = [
        "| run | NDCG@10 | gain (95% CI) | share of full's gain | train s | eval s | re-index | serving |",
        "|---|---:|---|---:|---:|---:|---|---|",
        f"| base | {rows[0]['base']:.4f} | | | | | | 1 encoder |",
    ]
    for r in rows:
        share = f"{r['gain'] / full:.0%}" if full else "-"
        lines.append(
            f"| {r['run']} | {r['tuned']:.4f} | {r['gain']:+.4f} ({r['low']:+.4f} .. {r['high']:+.4f}) | {share} | "
            f"{r['trainSeconds']:.0f} | {r['evalSeconds']:.0f} | {'yes' if r['reindex'] else 'no'} | {r['serving']} |"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--corpus", choices=["python-docs", "stdlib"], default="python-docs")
    p.add_argument("--rows", type=int, default=0, help="the corpus's first N pairs (0: all)")
    p.add_argument("--runs", default=",".join(RECIPES))
    p.add_argument("--out", type=Path, help="write the rows as JSON here too")
    a = p.parse_args()
    tmp, models = setup(a.corpus, a.rows)
    rows = []
    for name in a.runs.split(","):
        doc = sample_spec(MINILM_HUB_ID, matryoshkaDims=[384, 128], **RECIPES[name])
        t0 = time.perf_counter()
        rep = run_captured(bench_cfg(f"{a.corpus}-{name}".lower(), doc, tmp / "work", models))
        rows.append(row(name, rep, time.perf_counter() - t0))
        print(json.dumps(rows[-1]), flush=True)
        if a.out:
            a.out.write_text(json.dumps(rows, indent=1))
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
