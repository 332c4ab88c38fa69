"""Development tools live outside the trainer's package and find their files from the current directory."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from eft_devtools import demo

REPO = Path(__file__).resolve().parents[1]


def test_the_image_package_holds_no_development_tools() -> None:
    shipped = {p.stem for p in (REPO / "trainer_image" / "eft_trainer").glob("*.py")}
    assert not shipped & {"demo", "local_s3", "sample_data"}
    copies = re.findall(r"^COPY\s+(.+)$", (REPO / "trainer_image" / "Dockerfile").read_text(), flags=re.M)
    assert copies and not [c for c in copies if "eft_devtools" in c or c.split()[0] in (".", "trainer_image")]


def test_the_demo_reads_its_spec_relative_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert demo.main(["--data", str(tmp_path / "data")]) == 2
    assert f"{tmp_path / 'examples' / 'quickstart.yaml'} is missing" in capsys.readouterr().err

    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "quickstart.yaml").write_text((REPO / "examples" / "quickstart.yaml").read_text())
    assert demo.main(["--data", str(tmp_path / "data")]) == 2
    assert "python-docs/pairs.jsonl is missing: run `make data` first" in capsys.readouterr().err


def _result(per_query: list[float], dim: int = 384) -> Any:
    from eft_trainer.evaluation import EvalResult

    return EvalResult({dim: {"ndcg@10": sum(per_query) / len(per_query)}}, {dim: {"ndcg@10": per_query}})


def test_the_demo_prints_the_leaderboard_best_first_with_each_ci() -> None:
    from eft_trainer.baselines import Measured, leaderboard

    base, tuned = {"eval": _result([0.5, 0.6, 0.7, 0.6])}, {"eval": _result([0.8, 0.7, 0.9, 0.8])}
    short = Measured("minilm-64-tokens", "model", "m", {"eval": _result([0.4, 0.5, 0.6, 0.5])}, dimension=384)
    broken = Measured("served", "endpoint", "e", error="HTTP 401: key refused")
    report = {"leaderboard": leaderboard(base, tuned, [short, broken], "ndcg@10", 384, seed=0)}
    lines = demo.leaderboard_lines(report)
    assert lines[0] == "Leaderboard on the held-out queries (ndcg@10; fine-tuned minus each, 95% CI):"
    assert [line.split()[0] for line in lines[1:4]] == ["fine-tuned", "base", "minilm-64-tokens"]
    assert lines[1].endswith("384 dims  0.8000")  # the fine-tuned row has no difference with itself
    assert re.search(r"base\s+base\s+384 dims  0\.6000  \+0\.2000 \(\+0\.\d{4} \.\. \+0\.\d{4}\)$", lines[2])
    assert "minilm-64-tokens  model" in lines[3] and "+0.3000" in lines[3]
    assert lines[4] == "  served: could not be measured: HTTP 401: key refused"
    assert demo.leaderboard_lines({"headline": {}}) == []


def test_the_quickstart_has_a_baseline_so_the_demo_shows_a_leaderboard() -> None:
    import yaml

    doc = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())
    (baseline,) = doc["spec"]["evaluation"]["baselines"]
    assert baseline["model"]["base"] == doc["spec"]["model"]["base"] == demo.HUB_ID  # offline: the packaged MiniLM
    assert baseline["model"]["maxSeqLength"] < doc["spec"]["model"]["maxSeqLength"]
    assert str(baseline["model"]["maxSeqLength"]) in baseline["name"]  # named for what it is
