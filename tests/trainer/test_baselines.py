"""Baselines: an OpenAI-compatible embeddings endpoint through the real ``openai`` client against the project's
stand-in (faults, cost, the cache on rerun), and the leaderboard's figures and verdicts (pure)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from embeddings_standin import DIM, KEY, MODEL, EmbeddingsStandIn, embed_text

from eft_api.contract import baseline_key_env
from eft_api.spec import Baseline, EndpointBaseline, EvalData
from eft_trainer import data as D
from eft_trainer.baselines import (
    EmbeddingsCache,
    Measured,
    leaderboard,
    measure_endpoint,
    must_beat_rejection,
    short_form,
)
from eft_trainer.endpoint_embedder import EndpointEmbedder, EndpointFailed
from eft_trainer.evaluation import EvalResult, evaluate_embeddings
from eft_trainer.storage import LocalStore

TOPICS = ["python lists", "dictionary keys", "file reading", "exceptions", "virtual environments", "decorators"]


def irset() -> D.IRSet:
    records = [
        {"anchor": f"how do I use {t}?", "positive": f"{t}: a section of the tutorial about {t} and examples"}
        for t in TOPICS
    ]
    return D.ir_from_pairs(records, [], EvalData())


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddingsStandIn]:
    s = EmbeddingsStandIn().start()
    monkeypatch.setenv(baseline_key_env(0), KEY)
    yield s
    s.stop()


def spec(url: str, **kw: Any) -> EndpointBaseline:
    return EndpointBaseline(url=url, model=kw.pop("model", MODEL), **{"batch_size": 4, "max_retries": 2, **kw})


@pytest.mark.slow
def test_endpoint_embeds_in_order_in_batches_within_concurrency(standin: EmbeddingsStandIn) -> None:
    texts = [f"text number {i} about {TOPICS[i % 6]}" for i in range(10)]
    e = EndpointEmbedder(spec(standin.url, max_concurrency=2), "api", 0)
    emb = e.embed(texts)
    assert emb.shape == (10, DIM)
    assert np.allclose(emb, np.array([embed_text(t) for t in texts], dtype=np.float32), atol=1e-6)
    assert len(standin.requests) == 3 and not standin.problems  # 4 + 4 + 2
    assert standin.max_in_flight <= 2
    assert e.stats()["requests"] == 3 and e.stats()["tokens"] == sum(len(t.split()) for t in texts)


@pytest.mark.slow
def test_endpoint_honours_retry_after_and_retries_server_errors(standin: EmbeddingsStandIn) -> None:
    standin.faults.extend([429, 500])
    standin.retry_after = 1
    e = EndpointEmbedder(spec(standin.url, max_concurrency=1), "api", 0)
    emb = e.embed(["one text", "another text"])
    assert emb.shape == (2, DIM)
    s = e.stats()
    assert s["error429"] == 1 and s["error500"] == 1 and s["retries"] == 2 and s["requests"] == 3


@pytest.mark.slow
@pytest.mark.parametrize(
    ("setup", "kind"), [("wrong_dimension", "errorWrongDimension"), ("wrong_count", "errorWrongCount")]
)
def test_endpoint_fails_on_malformed_answers_after_retries(standin: EmbeddingsStandIn, setup: str, kind: str) -> None:
    setattr(standin, setup, True)
    e = EndpointEmbedder(spec(standin.url, dimensions=DIM, max_retries=1), "api", 0)
    with pytest.raises(EndpointFailed, match=rf"baseline api \(spec.evaluation.baselines\[0\].endpoint.*{kind} 2"):
        e.embed(["one text", "another text"])


@pytest.mark.slow
def test_endpoint_unknown_model_and_wrong_key_fail_at_once(
    standin: EmbeddingsStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(EndpointFailed, match=r"does not serve model 'nope'.*HTTP 404"):
        EndpointEmbedder(spec(standin.url, model="nope"), "api", 0).embed(["x"])
    monkeypatch.setenv(baseline_key_env(0), "sk-wrong")
    with pytest.raises(EndpointFailed, match=r"refused the API key.*HTTP 401") as exc:
        EndpointEmbedder(spec(standin.url), "api", 0).embed(["x"])
    assert "sk-wrong" not in str(exc.value)
    assert len(standin.requests) == 2  # no retry of a refusal


@pytest.mark.slow
def test_slow_endpoint_times_out_and_is_counted(standin: EmbeddingsStandIn) -> None:
    standin.delay = 2.5
    e = EndpointEmbedder(spec(standin.url, timeout_seconds=1, max_retries=0), "api", 0)
    with pytest.raises(EndpointFailed, match="errorTimeout 1"):
        e.embed(["x"])


@pytest.mark.slow
def test_endpoint_baseline_is_measured_and_a_rerun_makes_no_request(standin: EmbeddingsStandIn, tmp_path: Path) -> None:
    """Through the real openai client; the second measurement (a new run, same cache) asks the server nothing."""
    b = Baseline(name="api", endpoint=spec(standin.url))
    sets = {"eval": irset()}
    first = measure_endpoint(b, 0, sets, [1, 10], EmbeddingsCache(tmp_path / "run1", LocalStore(tmp_path / "store")))
    assert first.error is None and first.cost["cached"] is False and first.cost["requests"] == 3  # 12 texts / 4
    assert first.results["eval"].metrics[DIM]["accuracy@10"] == 1.0
    n = len(standin.requests)
    cache = EmbeddingsCache(
        tmp_path / "run1", LocalStore(tmp_path / "store")
    )  # the same work dir: the local copy of the cache
    second = measure_endpoint(b, 0, sets, [1, 10], cache)
    assert len(standin.requests) == n and second.cost == {"requests": 0, "cached": True}
    assert second.results["eval"].metrics == first.results["eval"].metrics
    standin.faults.extend([500] * 10)
    failed = measure_endpoint(
        b,
        0,
        {"eval": irset(), "other": irset()},
        [1, 10],
        EmbeddingsCache(tmp_path / "run2", LocalStore(tmp_path / "store")),
    )
    assert failed.error is not None and "after 2 retries" in failed.error and "error500" in failed.error


# ---------------------------------------------------------------- the leaderboard (pure)


def result(per_query: list[float], dim: int = 8) -> EvalResult:
    mean = sum(per_query) / len(per_query)
    return EvalResult({dim: {"ndcg@10": mean}}, {dim: {"ndcg@10": per_query}})


def test_leaderboard_rows_cis_and_must_beat() -> None:
    base = {"eval": result([0.2, 0.4, 0.3, 0.5])}
    tuned = {"eval": result([0.6, 0.7, 0.8, 0.7])}
    weak = Measured("weak", "model", "m", {"eval": result([0.1, 0.2, 0.1, 0.2], dim=4)}, dimension=4)
    strong = Measured("strong", "endpoint", "e", {"eval": result([0.9, 0.9, 0.95, 0.9])}, dimension=8)
    broken = Measured("broken", "endpoint", "e", error="baseline broken: HTTP 500")
    board = leaderboard(base, tuned, [weak, strong, broken], "ndcg@10", 8, seed=0)
    rows = board["sets"]["eval"]
    assert [r["name"] for r in rows] == ["strong", "fine-tuned", "base", "weak"]
    by = {r["name"]: r for r in rows}
    assert by["weak"]["dimension"] == 4 and by["weak"]["finetunedMinus"]["low"] > 0
    assert by["strong"]["finetunedMinus"]["high"] < 0
    assert by["fine-tuned"]["finetunedMinus"]["gain"] == 0
    assert must_beat_rejection(board, ["weak"], "ciLower") == ""
    assert "did not beat baseline strong" in must_beat_rejection(board, ["strong"], "estimate")
    assert "baseline broken could not be measured" in must_beat_rejection(board, ["broken"], "estimate")
    short = short_form(board)
    assert {s["name"] for s in short} == {"weak", "strong", "broken"}
    assert next(s for s in short if s["name"] == "weak")["finetunedMinus"] == pytest.approx(0.55, abs=1e-4)


def test_ci_lower_decides_more_strictly_than_the_estimate() -> None:
    base = {"eval": result([0.5] * 6)}
    tuned = {"eval": result([0.9, 0.1, 0.9, 0.1, 0.9, 0.2])}  # mean 0.5167: above the baseline, noisily
    close = Measured("close", "model", "m", {"eval": result([0.5] * 6)}, dimension=8)
    board = leaderboard(base, tuned, [close], "ndcg@10", 8, seed=0)
    assert must_beat_rejection(board, ["close"], "estimate") == ""
    assert "lower end of the 95% CI" in must_beat_rejection(board, ["close"], "ciLower")


def test_embeddings_of_the_stand_in_retrieve() -> None:
    """The stand-in's deterministic embedding is good enough to rank the right passage first here."""
    ir = irset()
    q = np.array([embed_text(t) for t in ir.queries.values()], dtype=np.float32)
    c = np.array([embed_text(t) for t in ir.corpus.values()], dtype=np.float32)
    r = evaluate_embeddings(q, c, ir, [DIM], [1])
    assert r.metrics[DIM]["accuracy@1"] == 1.0
