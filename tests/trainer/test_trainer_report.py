"""report.json/report.md building and the paired bootstrap (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from eft_trainer.report import build_report, deltas, paired_bootstrap, plot, render_markdown

BASE = {384: {"ndcg@10": 0.5, "mrr@10": 0.4}, 64: {"ndcg@10": 0.3, "mrr@10": 0.2}}
TUNED = {384: {"ndcg@10": 0.6, "mrr@10": 0.45}, 64: {"ndcg@10": 0.45, "mrr@10": 0.3}}


def test_deltas() -> None:
    d = deltas(BASE, TUNED)
    assert d[384]["ndcg@10"] == pytest.approx(0.1)
    assert d[64]["mrr@10"] == pytest.approx(0.1)


def test_bootstrap_constant_gain_has_zero_width() -> None:
    b = paired_bootstrap([0.1, 0.2, 0.3], [0.3, 0.4, 0.5], n=200)
    assert b["gain"] == pytest.approx(0.2)
    assert b["low"] == pytest.approx(0.2) and b["high"] == pytest.approx(0.2)


def test_bootstrap_interval_contains_mean_and_is_ordered() -> None:
    base = [0.0] * 50 + [1.0] * 50
    tuned = [1.0] * 30 + [0.0] * 20 + [1.0] * 50
    b = paired_bootstrap(base, tuned, n=500, seed=1)
    assert b["gain"] == pytest.approx(0.3)
    assert b["low"] < 0.3 < b["high"]
    assert b["low"] > 0.1  # 30 of 100 queries improved: clearly positive
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 2.0])


def test_report_markdown_and_plot(tmp_path: Path) -> None:
    rep = build_report(
        config={"name": "x", "baseModel": "m", "loss": "MultipleNegativesRanking"},
        data={"trainRows": 10},
        base=BASE,
        tuned=TUNED,
        primary_metric="ndcg@10",
        primary_dim=384,
        bootstrap=paired_bootstrap([0.5], [0.6]),
        timings={"train": 1.0},
        training={"steps": 3},
        hardware={"cpus": 2},
    )
    assert rep["headline"]["gain"] == pytest.approx(0.1)
    assert rep["metrics"]["delta"]["64"]["ndcg@10"] == pytest.approx(0.15)
    md = render_markdown(rep)
    assert "0.5000 -> 0.6000" in md and "| 64 |" in md and "dimensions.png" in md
    assert "### ndcg" in md and "| dim | @10 |" in md
    ndcg_64 = next(line for line in md.splitlines() if line.startswith("| 64 |") and "(+0.150)" in line)
    assert ndcg_64.count("->") == 1
    png = plot(rep, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_markdown_lists_files_and_rounds_figures() -> None:
    files = [{"uri": "s3://b/corpus/pairs.jsonl", "bytes": 123456, "sha256": "ab" * 32}]
    rep = build_report(
        config={"name": "x", "baseModel": "m", "loss": "MultipleNegativesRanking"},
        data={"trainRows": 10, "files": files},
        base=BASE,
        tuned=TUNED,
        primary_metric="ndcg@10",
        primary_dim=384,
        bootstrap=paired_bootstrap([0.5], [0.6]),
        timings={"train": 1.0},
        training={"pairsPerSecond": 11.523456789, "finalLoss": 0.123456789, "precision": "fp32"},
        hardware={"cpus": 2},
    )
    md = render_markdown(rep)
    assert "[{" not in md and "'uri'" not in md
    assert f"  - `s3://b/corpus/pairs.jsonl` (123,456 bytes, sha256 `{'ab' * 32}`)" in md
    assert "- pairsPerSecond: 11.52\n" in md and "- finalLoss: 0.1235\n" in md
    assert "456789" not in md
