"""report.json/report.md building and the paired bootstrap (pure)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from eft_api.report import Report
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


def report(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "config": {"name": "x", "baseModel": "m", "loss": "MultipleNegativesRanking"},
        "data": {"trainRows": 10},
        "base": BASE,
        "tuned": TUNED,
        "primary_metric": "ndcg@10",
        "primary_dim": 384,
        "bootstrap": paired_bootstrap([0.5], [0.6]),
        "timings": {"train": 1.0},
        "training": {"steps": 3},
        "hardware": {"cpus": 2},
    }
    return build_report(**{**args, **overrides})


def test_report_markdown_and_plot(tmp_path: Path) -> None:
    rep = report()
    assert rep["headline"]["gain"] == pytest.approx(0.1)
    assert rep["metrics"]["delta"]["64"]["ndcg@10"] == pytest.approx(0.15)
    md = render_markdown(Report.model_validate(rep))
    assert "0.5000 -> 0.6000" in md and "| 64 |" in md and "dimensions.png" in md
    assert "### ndcg" in md and "| dim | @10 |" in md
    ndcg_64 = next(line for line in md.splitlines() if line.startswith("| 64 |") and "(+0.150)" in line)
    assert ndcg_64.count("->") == 1
    png = plot(Report.model_validate(rep), tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_markdown_lists_files_and_rounds_figures() -> None:
    files = [{"uri": "s3://b/corpus/pairs.jsonl", "bytes": 123456, "sha256": "ab" * 32}]
    rep = report(
        data={"trainRows": 10, "files": files},
        training={"pairsPerSecond": 11.523456789, "finalLoss": 0.123456789, "precision": "fp32"},
    )
    md = render_markdown(Report.model_validate(rep))
    assert "[{" not in md and "'uri'" not in md
    assert f"  - `s3://b/corpus/pairs.jsonl` (123,456 bytes, sha256 `{'ab' * 32}`)" in md
    assert "- pairs per second: 11.52\n" in md and "- final loss: 0.1235\n" in md
    assert "456789" not in md


def test_lineage_records_the_base_model_data_settings_and_versions(tmp_path: Path) -> None:
    import hashlib

    import sentence_transformers
    from trainer_helpers import make_cfg, spec_dict

    from eft_trainer.lineage import lineage
    from eft_trainer.publish import model_card

    folder = tmp_path / "base"
    (folder / "2_Dense").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "2_Dense" / "model.safetensors").write_bytes(b"dense")
    (folder / "tokenizer.json").write_text("{}")
    spec = spec_dict("bkt", "http://127.0.0.1:1")
    spec["model"]["revision"] = "abc123"
    cfg = make_cfg(spec, tmp_path, tmp_path)
    model = SimpleNamespace(max_seq_length=64, model_card_data=SimpleNamespace())
    lin = lineage(cfg, model, str(folder))
    assert lin["baseModelWeightsSha256"] == {
        "2_Dense/model.safetensors": hashlib.sha256(b"dense").hexdigest(),
        "model.safetensors": hashlib.sha256(b"weights").hexdigest(),
    }
    assert (lin["baseModelRevision"], lin["maxSeqLength"], lin["maxSeqLengthFrom"]) == (
        "abc123",
        64,
        "spec.model.maxSeqLength",
    )
    assert lin["data"]["eval"] == {"heldOutFraction": 0.15, "seed": 42, "maxDistractors": 1000}
    assert lin["data"]["train"]["columns"]["anchor"] == "question"
    assert lin["versions"]["sentence_transformers"] == sentence_transformers.__version__
    assert (model.model_card_data.base_model, model.model_card_data.base_model_revision) == (
        "sentence-transformers/all-MiniLM-L6-v2",
        "abc123",
    )
    card = model_card(Report.model_validate(report(config={"name": "x", **lin})))
    assert "base_model_revision: abc123" in card and hashlib.sha256(b"dense").hexdigest() in card
    assert "maximum sequence length: 64 tokens (spec.model.maxSeqLength)" in card
    assert '"heldOutFraction": 0.15' in card and f"sentence_transformers: {sentence_transformers.__version__}" in card

    unset = make_cfg(spec_dict("bkt", "http://127.0.0.1:1"), tmp_path, tmp_path)
    unset = unset.model_copy(
        update={
            "spec": unset.spec.model_copy(
                update={"model": unset.spec.model.model_copy(update={"max_seq_length": None})}
            )
        }
    )
    assert (
        lineage(unset, SimpleNamespace(max_seq_length=256), str(folder))["maxSeqLengthFrom"]
        == "the base model's default"
    )
