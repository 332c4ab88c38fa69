"""``method: queryAdapter``: a frozen base model and a small trainable module on the query side only.

The published model is the base model followed by a sentence-transformers ``Router``
(``Router.for_query_document``): the ``query`` route holds the adapter (a square ``Dense`` initialised to
the identity, or a residual ``Dense`` ``x + tanh(Wx + b)`` starting at zero), then ``Normalize`` where the
base model normalises; the ``document`` route is empty. So ``SentenceTransformer(path)`` loads it with stock
modules only, ``encode_query`` goes through the adapter, and ``encode_document`` (and plain ``encode``, the
Router's default route) computes exactly what the base model computes: an index built with the base model
stays valid.

Because the encoder is frozen, every training text is embedded ONCE with the base model (queries through
its query route, documents through its document route; :mod:`eft_trainer.methods.cached_fit`) and the
adapter (:mod:`eft_trainer.methods.adapter_nets`: linear, low-rank or a residual MLP) trains on those cached
embeddings with sentence-transformers' own MultipleNegativesRankingLoss applied to embeddings
(``compute_loss_from_embeddings``; see :func:`in_batch_loss`), summed over the Matryoshka dimensions as
MatryoshkaLoss does; hard negatives (``training.hardNegatives``, mined once from the cached embeddings:
:mod:`eft_trainer.methods.cached_mining`) are further document columns.
A seeded share of the rows is held out (``training.earlyStopping``): the learning rate (learningRate / 3,
x 1, x 3) and the epoch are the ones that score best on it (NDCG@10 against every cached document),
training stops after ``patience`` epochs without improvement, and the curve goes into the report.
Batches hold no repeated text (the no-duplicates rule of the full method). The embeddings are kept with
the run's checkpoints (:mod:`eft_trainer.embedding_cache`), so a pod stopped by SIGTERM (or failed) after
embedding is followed by one that does not embed again; the adapter's own training takes seconds and
starts again (seeded, so it gives the same adapter).

``requires_grad`` is not saved with a model: whoever trains a loaded adapter model further must freeze
the base modules again (:func:`freeze_base`).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eft_api.spec import AdapterSpec, Loss, TrainingSpec
from eft_trainer.errors import InvalidSpecError
from eft_trainer.methods import Trained, TrainInput
from eft_trainer.methods.cached_fit import (
    CachedPairs,
    Stopper,
    cache_pairs,
    epoch_batches,
    step_budget,
    validation_ndcg,
    validation_plan,
)
from eft_trainer.training import TrainStats

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: Where the adapter alone is published (beside model/): the Router's saved folder.
ADAPTER_DIR = "adapter"


def route_modules(net: Any, normalize: bool) -> list[Any]:
    """The query route: the adapter's stock modules, then Normalize if the base normalises."""
    from sentence_transformers.sentence_transformer.modules import Normalize

    exported = net.export()
    return [*exported, Normalize()] if normalize else exported


def adapter_modules(dim: int, adapter: AdapterSpec, normalize: bool) -> list[Any]:
    """The query route of an untrained adapter (the identity), then Normalize if the base normalises."""
    from eft_trainer.methods import adapter_nets

    return route_modules(adapter_nets.build(dim, adapter), normalize)


def ends_normalized(model: Any) -> bool:
    from sentence_transformers.sentence_transformer.modules import Normalize

    return len(model) > 0 and isinstance(model[-1], Normalize)


def attach_adapter(model: Any, modules: list[Any]) -> Any:
    """Append a Router whose query route is ``modules`` and whose document route is empty (the base model)."""
    from sentence_transformers.sentence_transformer.modules import Router

    model.append(Router.for_query_document(query_modules=modules, document_modules=[]))
    return model


def router_of(model: Any) -> Any | None:
    from sentence_transformers.sentence_transformer.modules import Router

    last = model[-1] if len(model) else None
    return last if isinstance(last, Router) else None


def freeze_base(model: Any) -> None:
    """Freeze every parameter but the query route's (``requires_grad`` is not saved: call after loading)."""
    for p in model.parameters():
        p.requires_grad_(False)
    router = router_of(model)
    if router is not None:
        for m in router.sub_modules["query"]:
            for p in m.parameters():
                p.requires_grad_(True)


def apply_route(modules: Sequence[Any], x: torch.Tensor) -> torch.Tensor:
    feats: dict[str, Any] = {"sentence_embedding": x}
    for m in modules:
        feats = m(feats)
    out: torch.Tensor = feats["sentence_embedding"]
    return out


def in_batch_loss(model: Any, spec: TrainingSpec) -> Any:
    """sentence-transformers' MultipleNegativesRankingLoss for the spec's loss, to apply to embeddings.

    CachedMultipleNegativesRanking is the same objective (its mini-batches only save encoder memory, and
    here the encoder does not run); MultipleNegativesSymmetricRanking is the same loss in both directions.
    """
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    if spec.loss is Loss.MULTIPLE_NEGATIVES_SYMMETRIC_RANKING:
        return MultipleNegativesRankingLoss(
            model, directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction"
        )
    return MultipleNegativesRankingLoss(model)


def contrastive_loss(loss_fn: Any, q: torch.Tensor, docs: Sequence[torch.Tensor], dims: Sequence[int]) -> torch.Tensor:
    """``loss_fn`` on (queries, positives, negatives...) embeddings, summed over ``dims`` as MatryoshkaLoss does."""
    total: torch.Tensor = sum(  # type: ignore[assignment]
        loss_fn.compute_loss_from_embeddings([q[:, :d], *(x[:, :d] for x in docs)], None) for d in dims
    )
    return total


def pooled_dimension(model: Any) -> int | None:
    """The size of the model's one embedding per text, or None if it gives none (no Pooling: token embeddings)."""
    try:
        probe = model.encode_query(["probe"], convert_to_tensor=True, show_progress_bar=False)
    except KeyError:  # no module wrote a sentence_embedding
        return None
    return int(probe.shape[-1]) if probe.ndim == 2 and probe.shape[0] == 1 else None


def check_query_side_model(model: Any, cfg: Any, method: str) -> int:
    """The model's pooled embedding size; refuse a model without one or one that already ends in a Router."""
    dim = pooled_dimension(model)
    if not dim:
        raise InvalidSpecError(
            f"spec.training.method {method} needs a model with one pooled embedding per text (a Pooling "
            f"module); spec.model.base {cfg.spec.model.base} gives none"
        )
    if router_of(model) is not None or any(type(m).__name__ == "Router" for m in model):
        raise InvalidSpecError(
            f"spec.training.method {method}: spec.model.base {cfg.spec.model.base} already ends in a Router "
            "(an adapter model); start from its base model"
        )
    return int(dim)


@dataclass
class AdapterFit:
    """One learning rate's training: the adapter (its best epoch's weights), the curve, the counts."""

    learning_rate: float
    net: Any
    curve: list[dict[str, float]]
    best_epoch: int
    best_score: float | None
    steps: int = 0
    samples: int = 0
    losses: list[float] = field(default_factory=list)


def adapter_step(net: Any, data: CachedPairs, batch: list[int], loss_fn: Any, dims: list[int], opt: Any) -> float:
    """One optimiser step of the adapter on a batch of cached rows; the loss."""
    import torch

    b = torch.tensor(batch)
    q = net(data.q_emb[data.qi[b]])
    cols = data.di[b]
    loss = contrastive_loss(loss_fn, q, [data.d_emb[cols[:, j]] for j in range(cols.shape[1])], dims)
    opt.zero_grad()
    loss.backward()  # type: ignore[no-untyped-call]
    opt.step()
    return float(loss.detach())


def score_rows(net: Any, data: CachedPairs, val_idx: list[int]) -> float:
    """NDCG@10 of the held-out rows' queries through ``net`` against every cached document."""
    import torch

    idx = torch.tensor(val_idx)
    with torch.no_grad():
        q = net(data.q_emb[data.qi[idx]])
    return validation_ndcg(q, data.d_emb, data.di[idx, 0])


def fit_adapter(
    data: CachedPairs,
    plan: tuple[list[int], list[int]],
    dim: int,
    spec: TrainingSpec,
    lr: float,
    loss_fn: Any,
    max_steps: int,
) -> AdapterFit:
    """Train a fresh adapter with learning rate ``lr``; with a validation split, keep its best epoch (epoch 0:
    the identity, the base model itself) and stop after ``patience`` epochs without improvement."""
    import torch
    from transformers import get_scheduler

    from eft_trainer.methods import adapter_nets

    train_idx, val_idx = plan
    torch.manual_seed(spec.seed)
    net = adapter_nets.build(dim, spec.adapter).to(data.q_emb.device)
    dims = list(spec.matryoshka_dims) or [dim]

    def batches_in(epoch: int) -> int:
        return len(epoch_batches(data.rows, train_idx, spec.batch_size, spec.seed, epoch))

    total = max_steps if max_steps > 0 else step_budget(spec.epochs, batches_in)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    sched = get_scheduler(
        spec.scheduler, opt, num_warmup_steps=math.ceil(spec.warmup_ratio * total), num_training_steps=total
    )
    stopper = Stopper(spec.early_stopping.patience)
    fit = AdapterFit(lr, net, [], 0, None)
    best = copy.deepcopy(net.state_dict())
    if val_idx:
        stopper.update(0, score_rows(net, data, val_idx))
        fit.curve.append({"learningRate": lr, "epoch": 0, "validationNdcg@10": stopper.best})
    epoch = 0
    while fit.steps < total and not stopper.stop:
        epoch += 1
        net.train()
        seen: list[float] = []
        for batch in epoch_batches(data.rows, train_idx, spec.batch_size, spec.seed, epoch):
            seen.append(adapter_step(net, data, batch, loss_fn, dims, opt))
            sched.step()
            fit.steps, fit.samples = fit.steps + 1, fit.samples + len(batch)
            if fit.steps >= total:
                break
        net.eval()
        fit.losses += seen
        point = {"learningRate": lr, "epoch": epoch, "loss": float(sum(seen) / max(1, len(seen)))}
        if val_idx:
            point["validationNdcg@10"] = score_rows(net, data, val_idx)
            if stopper.update(epoch, point["validationNdcg@10"]):
                best = copy.deepcopy(net.state_dict())
        fit.curve.append(point)
    if val_idx:
        net.load_state_dict(best)
        fit.best_epoch, fit.best_score = stopper.best_epoch, stopper.best
    else:
        fit.best_epoch = epoch
    return fit


def learning_rates(spec: TrainingSpec, validating: bool) -> list[float]:
    """The adapter's learning rates to try: the spec's, and a third and three times it when searching. Pure."""
    lr = spec.adapter.learning_rate
    if spec.adapter.learning_rate_search and validating:
        return [lr / 3, lr, min(1.0, lr * 3)]
    return [lr]


class QueryAdapter:
    """The base model frozen; a query-side module trained on cached embeddings. No re-indexing."""

    name = "queryAdapter"
    reindex_required = False

    def train(self, inp: TrainInput) -> Trained:
        model, spec = inp.model, inp.cfg.spec.training
        dim = check_query_side_model(model, inp.cfg, self.name)
        data = cache_pairs(model, inp)
        plan = validation_plan(len(data.rows), spec.early_stopping, spec.seed)
        loss_fn = in_batch_loss(model, spec)
        t1 = time.perf_counter()
        fits = [
            fit_adapter(data, plan, dim, spec, lr, loss_fn, inp.max_steps) for lr in learning_rates(spec, bool(plan[1]))
        ]
        seconds = time.perf_counter() - t1
        chosen = max(fits, key=lambda f: f.best_score if f.best_score is not None else 0.0)
        attach_adapter(model, route_modules(chosen.net, ends_normalized(model)))
        router = router_of(model)
        assert router is not None
        router.to(data.q_emb.device)
        freeze_base(model)
        model.eval()
        log.info(
            "trained the %s query adapter: %d fits, %d steps in %.2fs",
            spec.adapter.kind,
            len(fits),
            sum(f.steps for f in fits),
            seconds,
        )
        steps, samples = sum(f.steps for f in fits), sum(f.samples for f in fits)
        stats = TrainStats(
            seconds=seconds,
            steps=steps,
            samples=samples,
            samples_per_second=samples / seconds if seconds > 0 else 0.0,
            precision="fp32",
            resumed_from_step=0,
            final_loss=float(sum(chosen.losses[-10:]) / len(chosen.losses[-10:])) if chosen.losses else None,
            interrupted=False,
        )
        return Trained(model, stats, self._details(chosen, fits, data, plan, seconds))

    def _details(
        self,
        chosen: AdapterFit,
        fits: list[AdapterFit],
        data: CachedPairs,
        plan: tuple[list[int], list[int]],
        seconds: float,
    ) -> dict[str, Any]:
        spec_kind = type(chosen.net).__name__
        return {
            "method": self.name,
            "adapterKind": spec_kind.removesuffix("Adapter").lower(),
            "adapterParameters": sum(p.numel() for p in chosen.net.parameters()),
            "textsEmbedded": data.texts_embedded,
            "embeddingsReused": data.reused,
            "embedSeconds": data.seconds,
            "adapterTrainSeconds": seconds,
            "epochsRun": max((int(p["epoch"]) for p in chosen.curve), default=chosen.best_epoch),
            "hardNegativeColumns": int(data.di.shape[1]) - 1,
            **data.details,
            "validationRows": len(plan[1]),
            "learningRate": chosen.learning_rate,
            "bestEpoch": chosen.best_epoch,
            **({"validationNdcg@10": chosen.best_score} if chosen.best_score is not None else {}),
            **({"validationCurve": [p for f in fits for p in f.curve]} if plan[1] else {}),
        }

    def save_extras(self, trained: Any, out: Path) -> list[str]:
        """The adapter alone (the Router's folder: its query route's modules), a few hundred KB."""
        router = router_of(trained)
        assert router is not None
        dest = out / ADAPTER_DIR
        dest.mkdir(parents=True, exist_ok=True)
        router.save(str(dest))
        return [ADAPTER_DIR + "/"]
