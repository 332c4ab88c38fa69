"""``method: queryAdapter``: a frozen base model and a small trainable module on the query side only.

The published model is the base model followed by a sentence-transformers ``Router``
(``Router.for_query_document``): the ``query`` route holds the adapter (a square ``Dense`` initialised to
the identity, or a residual ``Dense`` ``x + tanh(Wx + b)`` starting at zero), then ``Normalize`` where the
base model normalises; the ``document`` route is empty. So ``SentenceTransformer(path)`` loads it with stock
modules only, ``encode_query`` goes through the adapter, and ``encode_document`` (and plain ``encode``, the
Router's default route) computes exactly what the base model computes: an index built with the base model
stays valid.

Because the encoder is frozen, every training text is embedded ONCE with the base model (queries through
its query route, documents through its document route) and the adapter trains on those cached embeddings
with sentence-transformers' own MultipleNegativesRankingLoss applied to embeddings
(``compute_loss_from_embeddings``; see :func:`in_batch_loss`), summed over the Matryoshka dimensions as
MatryoshkaLoss does.
Batches hold no repeated text (the no-duplicates rule of the full method). The embeddings are kept with
the run's checkpoints (:mod:`eft_trainer.embedding_cache`), so a pod stopped by SIGTERM (or failed) after
embedding is followed by one that does not embed again; the adapter's own training takes seconds and
starts again (seeded, so it gives the same adapter).

``requires_grad`` is not saved with a model: whoever trains a loaded adapter model further must freeze
the base modules again (:func:`freeze_base`).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eft_api.spec import AdapterSpec, Loss, TrainingSpec
from eft_trainer.batching import group_batches
from eft_trainer.errors import InvalidSpecError
from eft_trainer.methods import Trained, TrainInput
from eft_trainer.training import TrainStats

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: Where the adapter alone is published (beside model/): the Router's saved folder.
ADAPTER_DIR = "adapter"


def adapter_modules(dim: int, adapter: AdapterSpec, normalize: bool) -> list[Any]:
    """The query route: the adapter (the identity before training), then Normalize if the base normalises."""
    import torch
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    if adapter.kind == "linear":
        first = Dense(
            dim,
            dim,
            bias=True,
            activation_function=torch.nn.Identity(),
            init_weight=torch.eye(dim),
            init_bias=torch.zeros(dim),
        )
    else:  # mlp: x + tanh(W x + b) with W, b = 0: the identity, with a non-linear residual to learn
        first = Dense(
            dim,
            dim,
            bias=True,
            activation_function=torch.nn.Tanh(),
            init_weight=torch.zeros(dim, dim),
            init_bias=torch.zeros(dim),
            use_residual=True,
        )
    return [first, Normalize()] if normalize else [first]


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


def _negative_keys(rows: Sequence[dict[str, Any]]) -> list[str]:
    keys = {k for r in rows for k in r if k.startswith("negative_")}
    return sorted(keys, key=lambda k: int(k.split("_")[1]))


class QueryAdapter:
    """The base model frozen; a query-side module trained on cached embeddings. No re-indexing."""

    name = "queryAdapter"
    reindex_required = False

    def train(self, inp: TrainInput) -> Trained:
        import numpy as np
        import torch
        from transformers import get_scheduler

        model, cfg, train, max_steps = inp.model, inp.cfg, inp.train, inp.max_steps
        spec = cfg.spec.training
        dim = pooled_dimension(model)
        if not dim:
            raise InvalidSpecError(
                f"spec.training.method queryAdapter needs a model with one pooled embedding per text (a Pooling "
                f"module); spec.model.base {cfg.spec.model.base} gives none"
            )
        if router_of(model) is not None:
            raise InvalidSpecError(
                f"spec.training.method queryAdapter: spec.model.base {cfg.spec.model.base} already ends in a Router "
                "(an adapter model); start from its base model"
            )
        negs = [k for k in _negative_keys(train) if all(isinstance(r.get(k), str) and r.get(k) for r in train)]
        rows = [(r["anchor"], r["positive"], *(r[k] for k in negs)) for r in train]

        # 1. Embed every training text once with the frozen base model, or take the embeddings a SIGTERMed
        #    or failed earlier pod of this run kept with its checkpoints.
        t0 = time.perf_counter()
        model.eval()
        queries = sorted({r[0] for r in rows})
        documents = sorted({t for r in rows for t in r[1:]})
        (q_arr, q_cached), (d_arr, d_cached) = (
            _frozen_embeddings(model, inp, route, texts)
            for route, texts in (("query", queries), ("document", documents))
        )
        device = model.device
        q_emb, d_emb = torch.from_numpy(q_arr).to(device), torch.from_numpy(d_arr).to(device)
        embed_seconds = time.perf_counter() - t0
        q_index = {t: i for i, t in enumerate(queries)}
        d_index = {t: i for i, t in enumerate(documents)}
        qi = torch.tensor([q_index[r[0]] for r in rows])
        di = torch.tensor([[d_index[t] for t in r[1:]] for r in rows])
        log.info("embedded %d queries and %d documents once in %.1fs", len(queries), len(documents), embed_seconds)

        # 2. Attach the adapter (the identity), freeze the base, train the adapter on the cached embeddings.
        modules = adapter_modules(int(dim), cfg.spec.training.adapter, ends_normalized(model))
        attach_adapter(model, modules)
        router = router_of(model)
        assert router is not None
        router.to(q_emb.device)
        freeze_base(model)
        params = [p for m in modules for p in m.parameters()]
        loss_fn = in_batch_loss(model, spec)
        dims = list(spec.matryoshka_dims) or [int(dim)]
        random.seed(spec.seed)
        torch.manual_seed(spec.seed)
        rng = random.Random(spec.seed)
        per_epoch = math.ceil(len(rows) / spec.batch_size)
        total = max_steps if max_steps > 0 else max(1, math.ceil(spec.epochs * per_epoch))
        opt = torch.optim.AdamW(params, lr=spec.adapter.learning_rate, weight_decay=0.0)
        sched = get_scheduler(
            spec.scheduler,
            opt,
            num_warmup_steps=math.ceil(spec.warmup_ratio * total),
            num_training_steps=total,
        )
        for m in modules:
            m.train()
        t1 = time.perf_counter()
        step, samples, epoch = 0, 0, 0
        losses: list[float] = []
        while step < total:
            order = list(range(len(rows)))
            rng.shuffle(order)
            for batch in group_batches(rows, spec.batch_size, order):
                if len(batch) < 2:
                    continue  # one row has no in-batch negative
                b = torch.tensor(batch)
                q = apply_route(modules, q_emb[qi[b]])
                cols = di[b]
                loss = contrastive_loss(loss_fn, q, [d_emb[cols[:, j]] for j in range(cols.shape[1])], dims)
                opt.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
                sched.step()
                step += 1
                samples += len(batch)
                losses.append(float(loss.detach()))
                if step >= total:
                    break
            epoch += 1
        seconds = time.perf_counter() - t1
        for m in modules:
            m.eval()
        freeze_base(model)
        log.info("trained the %s query adapter: %d steps in %.2fs", spec.adapter.kind, step, seconds)
        stats = TrainStats(
            seconds=seconds,
            steps=step,
            samples=samples,
            samples_per_second=samples / seconds if seconds > 0 else 0.0,
            precision="fp32",
            resumed_from_step=0,
            final_loss=float(np.mean(losses[-10:])) if losses else None,
            interrupted=False,
        )
        details = {
            "method": self.name,
            "adapterKind": spec.adapter.kind,
            "adapterParameters": sum(p.numel() for p in params),
            "textsEmbedded": (0 if q_cached else len(queries)) + (0 if d_cached else len(documents)),
            "embeddingsReused": q_cached and d_cached,
            "embedSeconds": embed_seconds,
            "adapterTrainSeconds": seconds,
            "epochsRun": epoch,
        }
        return Trained(model, stats, details)

    def save_extras(self, trained: Any, out: Path) -> list[str]:
        """The adapter alone (the Router's folder: its query route's modules), a few hundred KB."""
        router = router_of(trained)
        assert router is not None
        dest = out / ADAPTER_DIR
        dest.mkdir(parents=True, exist_ok=True)
        router.save(str(dest))
        return [ADAPTER_DIR + "/"]


def _frozen_embeddings(model: Any, inp: TrainInput, route: str, texts: Sequence[str]) -> tuple[Any, bool]:
    """The frozen base model's ``route`` (query or document) embedding of each text, from the run's cache
    when an earlier pod of the run made it."""
    import torch

    from eft_trainer import embedding_cache
    from eft_trainer.methods.full import checkpoint_prefix

    cfg = inp.cfg
    bs = cfg.spec.evaluation.batch_size
    encode_route = model.encode_query if route == "query" else model.encode_document

    def encode(batch: list[str]) -> Any:
        with torch.no_grad():
            return encode_route(batch, batch_size=bs, convert_to_numpy=True, show_progress_bar=False)

    m = cfg.spec.model
    key = embedding_cache.cache_key([m.base, m.revision, m.max_seq_length, route], texts)
    main = inp.world is None or inp.world.main
    prefix = checkpoint_prefix(inp)
    return embedding_cache.cached_embeddings(
        encode, texts, key, "adapter-embeddings", inp.own, inp.storage, prefix, main
    )
