"""Merging against forgetting: exact at ratios 0 and 1, linear in between, the adapter with the identity, the
ratio search's bookkeeping and the choice; per-query evidence (ranks before and after)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from eft_api.spec import AdapterSpec, EvalData
from eft_trainer import data as D
from eft_trainer.evaluation import EvalResult
from eft_trainer.merge import (
    Point,
    best_trade_off,
    choose,
    describe,
    identity_state,
    lerp_state,
    merged_model,
    next_ratio,
)
from eft_trainer.per_query import markdown, movers, rank


def test_lerp_is_exact_at_the_ends_and_linear_between() -> None:
    g = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(5, 3, generator=g), "b": torch.randn(3, generator=g), "n": torch.tensor(7)}
    tuned = {"w": torch.randn(5, 3, generator=g), "b": torch.randn(3, generator=g), "n": torch.tensor(9)}
    assert all(torch.equal(lerp_state(base, tuned, 0.0)[k], base[k]) for k in ("w", "b"))
    assert all(torch.equal(lerp_state(base, tuned, 1.0)[k], tuned[k]) for k in ("w", "b", "n"))
    half = lerp_state(base, tuned, 0.5)
    assert torch.allclose(half["w"], (base["w"] + tuned["w"]) / 2) and int(half["n"]) == 9
    with pytest.raises(ValueError, match="differ in their weights"):
        lerp_state(base, {"w": tuned["w"]}, 0.5)


def test_merged_module_and_the_adapter_identity() -> None:
    torch.manual_seed(0)
    base, tuned = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    x = torch.randn(3, 4)
    assert torch.equal(merged_model(base, tuned, 1.0)(x), tuned(x))
    assert torch.equal(merged_model(base, tuned, 0.0)(x), base(x))
    from sentence_transformers.sentence_transformer.modules import Dense

    from eft_trainer.methods.query_adapter import adapter_modules

    for spec in (AdapterSpec(kind="linear"), AdapterSpec(kind="mlp"), AdapterSpec(kind="linear", rank=2)):
        # the adapter before training is the identity: every module of it equals its identity state
        for fresh in (m for m in adapter_modules(4, spec, normalize=False) if isinstance(m, Dense)):
            ident = identity_state(fresh)
            assert all(torch.equal(ident[k], v) for k, v in fresh.state_dict().items()), spec


def test_search_bisects_towards_the_largest_ratio_passing_the_guards() -> None:
    points: list[Point] = []
    assert next_ratio(points, []) == 1.0
    points.append(Point(1.0, 0.80, guards_passed=False))
    assert next_ratio(points, []) == 0.5
    points.append(Point(0.5, 0.76))
    assert next_ratio(points, []) == 0.75
    points.append(Point(0.75, 0.78, guards_passed=False))
    assert next_ratio(points, []) == 0.625
    points.append(Point(0.625, 0.775))
    assert next_ratio(points, []) is None  # 1 + 3 steps
    assert choose(points) == points[-1]
    assert next_ratio([Point(1.0, 0.8)], []) is None  # nothing to repair
    assert next_ratio([Point(1.0, 0.8)], [0.3, 1, 0.6]) == 0.6  # given: largest first, each once
    assert next_ratio([Point(r, 0.8) for r in (1, 0.6, 0.3)], [0.3, 1, 0.6]) is None


def test_choice_needs_the_gate_too_and_names_the_best_trade_off() -> None:
    points = [
        Point(1.0, 0.8, guards_passed=False),
        Point(0.5, 0.7, gate_passed=False),
        Point(0.25, 0.65, gate_passed=False),
    ]
    assert choose(points) is None
    assert best_trade_off(points) == points[1]
    assert "best trade-off was ratio 0.5 (ndcg@10 0.7000), which fails the gate" in describe(points, None, "ndcg@10")
    ok = [Point(1.0, 0.8), Point(0.5, 0.8)]
    assert choose(ok) == ok[0]  # a tie keeps the larger ratio
    assert describe(ok, ok[0], "ndcg@10").startswith("merge ratio 1 chosen")


def _result(ndcg: list[float], mrr: list[float]) -> EvalResult:
    return EvalResult({8: {}}, {8: {"ndcg@10": ndcg, "mrr@10": mrr}})


def test_movers_rank_before_and_after_with_the_relevant_passage() -> None:
    records = [{"anchor": f"question {i}", "positive": f"passage {i}"} for i in range(4)]
    ir = D.ir_from_pairs(records, [], EvalData())
    base = _result([1.0, 0.5, 0.0, 0.3], [1.0, 0.5, 0.0, 0.25])
    tuned = _result([0.3, 1.0, 0.6, 0.3], [0.25, 1.0, 0.5, 0.25])
    m = movers(ir, base, tuned, 8, "ndcg@10", [1, 10])
    assert m["changed"] == 3 and m["queries"] == 4
    assert [(r["rankBefore"], r["rankAfter"]) for r in m["worse"]] == [(1, 4)]
    assert [(r["rankBefore"], r["rankAfter"]) for r in m["better"]] == [(None, 2), (2, 1)]
    assert m["worse"][0]["relevant"] in ir.relevant[m["worse"][0]["id"]]
    text = "\n".join(markdown("eval", m, "ndcg@10"))
    assert "| question 2 |" in text and "| >10 | 2 | +0.600 |" in text
    assert rank(0.0) is None and rank(1 / 3) == 3
    assert len(movers(ir, base, tuned, 8, "ndcg@10", [10], top=1)["better"]) == 1


@pytest.mark.slow
def test_merged_minilm_embeds_exactly_as_base_and_fine_tuned_at_the_ends(model_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from trainer_helpers import HUB_ID

    base = SentenceTransformer(str(model_dir / HUB_ID))
    tuned = SentenceTransformer(str(model_dir / HUB_ID))
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.01 * torch.randn_like(p))
    texts = ["how do I read a file?", "dictionary keys must be hashable"]
    e = {r: merged_model(base, tuned, r).encode(texts) for r in (0.0, 0.5, 1.0)}
    assert np.array_equal(e[0.0], base.encode(texts)) and np.array_equal(e[1.0], tuned.encode(texts))
    assert not np.array_equal(e[0.5], e[0.0]) and not np.array_equal(e[0.5], e[1.0])


def test_a_guard_decided_by_ci_lower_is_stricter_than_by_the_estimate() -> None:
    from eft_api.spec import Guard
    from eft_trainer.guards import GuardSet, figures

    gs = GuardSet(Guard.model_validate({"name": "faq", "uri": "s3://bkt/faq.jsonl", "maxDrop": 0.05}), 0, None, {})  # type: ignore[arg-type]
    base = [0.5] * 8
    tuned = [0.9, 0.1, 0.9, 0.1, 0.5, 0.5, 0.5, 0.42]  # a drop of 0.01 on average, noisily
    kw: dict[str, Any] = {"primary_metric": "ndcg@10", "dimension": 8, "seed": 0}
    assert figures(gs, base, tuned, **kw)["passed"]
    assert not figures(gs, base, tuned, decide_by="ciLower", **kw)["passed"]
