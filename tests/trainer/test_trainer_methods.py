"""The training methods without S3: dispatch, the adapter's start at the identity, the loss on cached
embeddings, and models a query adapter refuses (naming the field)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from trainer_helpers import HUB_ID, make_cfg, spec_dict

from eft_api.contract import Reason
from eft_api.spec import AdapterSpec, InvalidSpec, TrainingSpec, parse_spec
from eft_trainer.errors import InvalidSpecError
from eft_trainer.methods import TrainInput, adapter_nets, for_spec
from eft_trainer.methods.query_adapter import (
    QueryAdapter,
    adapter_modules,
    apply_route,
    attach_adapter,
    contrastive_loss,
    in_batch_loss,
)
from eft_trainer.storage import LocalStore


@pytest.fixture(scope="module")
def minilm(model_dir: Path) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir / HUB_ID), device="cpu")


def test_the_method_is_chosen_once_from_the_spec() -> None:
    full = for_spec(parse_spec(spec_dict("bkt", "http://127.0.0.1:1")))
    adapter = for_spec(parse_spec(spec_dict("bkt", "http://127.0.0.1:1", method="queryAdapter")))
    assert (full.name, full.reindex_required) == ("full", True)
    assert (adapter.name, adapter.reindex_required) == ("queryAdapter", False)


@pytest.mark.parametrize(
    "adapter",
    [AdapterSpec(), AdapterSpec(rank=4), AdapterSpec(kind="mlp", hidden_dim=16)],
    ids=["linear", "low-rank", "mlp"],
)
def test_a_trained_adapter_exports_to_stock_modules_computing_the_same(adapter: AdapterSpec) -> None:
    """The adapter trains as a small torch module and is published as stock Dense modules: the same function."""
    torch.manual_seed(0)
    net = adapter_nets.build(32, adapter)
    x = torch.randn(8, 32)
    with torch.no_grad():
        assert torch.equal(net(x), x)  # the identity before training
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))  # as if trained
        assert torch.allclose(apply_route(net.export(), x.clone()), net(x), atol=1e-5)
        assert not torch.allclose(net(x), x, atol=1e-3)
    params = sum(p.numel() for p in net.parameters())
    assert (
        params
        == {"linear": 32 * 32 + 32, "low-rank": 2 * 32 * 4 + 32, "mlp": 2 * 32 * 16 + 16 + 32}[
            "mlp" if adapter.kind == "mlp" else ("low-rank" if adapter.rank else "linear")
        ]
    )


@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("normalize", [True, False])
def test_an_untrained_adapter_is_the_identity(kind: str, normalize: bool) -> None:
    x = torch.nn.functional.normalize(torch.randn(8, 32), dim=-1) if normalize else torch.randn(8, 32)
    modules = adapter_modules(32, AdapterSpec(kind=kind), normalize)  # type: ignore[arg-type]
    assert len(modules) == (1 if kind == "linear" else 2) + normalize
    with torch.no_grad():
        y = apply_route(modules, x.clone())
    assert torch.allclose(y, x, atol=1e-6)
    if not normalize:
        assert torch.equal(y, x)  # exactly: I x + 0, or x + tanh(0 x + 0)


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["MultipleNegativesRanking", "MultipleNegativesSymmetricRanking"])
def test_the_loss_on_embeddings_is_sentence_transformers_own(loss: str, minilm: Any) -> None:
    from sentence_transformers.sentence_transformer import losses

    torch.manual_seed(0)
    q, pos, neg = torch.randn(6, 384), torch.randn(6, 384), torch.randn(6, 384)
    spec = TrainingSpec.model_validate({"loss": loss, "matryoshkaDims": [384, 64]})
    ours = contrastive_loss(in_batch_loss(minilm, spec), q, [pos, neg], [384, 64])
    stock = getattr(losses, loss + "Loss")(minilm)
    expected = sum(stock.compute_loss_from_embeddings([q[:, :d], pos[:, :d], neg[:, :d]], None) for d in (384, 64))
    assert torch.allclose(ours, expected)
    # In-batch negatives: a batch whose queries match their positives has a far lower loss than a shuffled one.
    assert contrastive_loss(in_batch_loss(minilm, spec), pos, [pos], [384]) < ours


@pytest.mark.slow
def test_a_model_without_a_pooled_embedding_is_refused(tmp_path: Path, minilm: Any) -> None:
    from sentence_transformers import SentenceTransformer

    tokens_only = SentenceTransformer(modules=[minilm[0]], device="cpu")
    cfg = make_cfg(spec_dict("bkt", "http://127.0.0.1:1", method="queryAdapter"), tmp_path, tmp_path)
    rows = [{"anchor": "a", "positive": "b"}, {"anchor": "c", "positive": "d"}]
    with pytest.raises(InvalidSpecError) as err:
        QueryAdapter().train(TrainInput(tokens_only, cfg, rows, LocalStore(tmp_path / "store"), tmp_path))
    assert err.value.reason == Reason.INVALID_SPEC
    assert "spec.training.method" in err.value.message and "Pooling" in err.value.message


@pytest.mark.slow
def test_an_adapter_model_as_the_base_is_refused(tmp_path: Path, minilm: Any) -> None:
    from sentence_transformers import SentenceTransformer

    adapted = attach_adapter(
        SentenceTransformer(modules=list(minilm), device="cpu"), adapter_modules(384, AdapterSpec(), True)
    )
    cfg = make_cfg(spec_dict("bkt", "http://127.0.0.1:1", method="queryAdapter"), tmp_path, tmp_path)
    with pytest.raises(InvalidSpecError, match=r"spec.training.method queryAdapter.*already ends in a Router"):
        QueryAdapter().train(
            TrainInput(adapted, cfg, [{"anchor": "a", "positive": "b"}], LocalStore(tmp_path / "store"), tmp_path)
        )


@pytest.mark.parametrize(
    ("fmt", "loss", "field"),
    [
        ("scored-pairs", "CoSENT", "spec.training.method"),
        ("labeled-texts", "BatchAllTriplet", "spec.training.method"),
        ("triplets", "Triplet", "spec.training.loss"),
    ],
)
def test_a_method_that_does_not_fit_the_data_is_refused(fmt: str, loss: str, field: str) -> None:
    doc = spec_dict("bkt", "http://127.0.0.1:1", method="queryAdapter", loss=loss)
    doc["data"]["train"]["format"] = fmt
    with pytest.raises(InvalidSpec) as err:
        parse_spec(doc)
    assert [p.path for p in err.value.problems] == [field]


@pytest.mark.slow
def test_gradient_cache_of_the_query_tower_gives_the_same_gradients(minilm: Any) -> None:
    """CachedMultipleNegativesRanking and the out-of-memory fallback encode the queries in mini-batches with
    cached gradients: the same gradients as one pass, in less memory (compared without dropout: its masks
    depend on the mini-batch shapes)."""
    from eft_trainer.methods.query_encoder import encoder_step, query_tower

    tower = query_tower(minilm)
    tower.eval()
    texts = [f"how do I use module number {i} of the standard library" for i in range(7)]
    docs = [torch.nn.functional.normalize(torch.randn(7, 384, generator=torch.Generator().manual_seed(1)), dim=-1)]
    loss_fn = in_batch_loss(tower, TrainingSpec())
    grads = []
    for mini in (None, 3):
        tower.zero_grad()
        torch.manual_seed(5)
        loss = encoder_step(tower, texts, docs, loss_fn, [384, 64], mini)
        grads.append((loss, [p.grad.clone() for p in tower.parameters() if p.grad is not None]))
    (l1, g1), (l2, g2) = grads
    assert abs(l1 - l2) < 1e-5 and len(g1) == len(g2) > 0
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(g1, g2, strict=True))
    assert all(p.grad is None for p in minilm.parameters())  # the base (the document tower) got no gradient
