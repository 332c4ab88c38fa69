"""What the query-side methods (``queryAdapter``, ``queryEncoder``) share: the base model's embeddings of the
training texts computed once (and kept with the run's checkpoints), the internal validation split, its
retrieval score against the cached document embeddings, early stopping, and each epoch's batches.

Pure parts (the split, the batches, the stopping rule) take no torch and are tested by tables.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eft_api.spec import EarlyStopping, HardNegatives
from eft_trainer import distributed as dist
from eft_trainer import embedding_cache
from eft_trainer.batching import group_batches
from eft_trainer.methods.cached_mining import Window, mine_cached
from eft_trainer.methods.full import checkpoint_prefix

if TYPE_CHECKING:
    import torch

    from eft_trainer.methods import TrainInput

log = logging.getLogger(__name__)

#: A validation split smaller than this many rows is not worth its noise: every row trains instead.
MIN_VALIDATION_ROWS = 8
#: The validation metric's cut-off (NDCG@10 of each held-out query against every cached document).
VALIDATION_K = 10


def negative_keys(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The ``negative_<i>`` columns every row fills, in order. Pure."""
    keys = {k for r in rows for k in r if k.startswith("negative_")}
    return [
        k
        for k in sorted(keys, key=lambda k: int(k.split("_")[1]))
        if all(isinstance(r.get(k), str) and r.get(k) for r in rows)
    ]


def split_rows(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(training rows, validation rows): a seeded ``fraction`` of ``n`` held out, or none when that would be
    fewer than :data:`MIN_VALIDATION_ROWS` (or leave fewer than two rows to train). Pure."""
    held = round(n * fraction)
    if held < MIN_VALIDATION_ROWS or n - held < 2:
        return list(range(n)), []
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[held:]), sorted(order[:held])


def epoch_batches(
    rows: Sequence[tuple[str, ...]], train_idx: Sequence[int], batch_size: int, seed: int, epoch: int
) -> list[list[int]]:
    """The batches of one epoch (row indices; no text repeated in a batch): a function of the seed and the
    epoch only, so a resumed run replays the same batches. Batches of one row (no in-batch negative) are left
    out. Pure."""
    order = list(train_idx)
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return [b for b in group_batches(rows, batch_size, order) if len(b) >= 2]


def step_budget(epochs: float, batches_in: Callable[[int], int], first: int = 1) -> int:
    """Optimizer steps in ``epochs`` epochs as they will run: epochs ``first``, ``first + 1``, ... each with
    its own number of batches (batches without a repeated text come out more or fewer from one shuffle to
    the next), the fraction of a last epoch rounded up. Taking the first epoch's count times ``epochs``
    ran a third, partial epoch for ``epochs: 2`` when the later shuffles gave fewer batches. Pure."""
    whole = int(epochs)
    total = sum(batches_in(first + e) for e in range(whole))
    if epochs > whole:
        total += math.ceil((epochs - whole) * batches_in(first + whole))
    return max(1, total)


@dataclass
class Stopper:
    """Early stopping: the best score and epoch so far, and whether ``patience`` epochs went by without a
    better one. Pure."""

    patience: int
    best: float = float("-inf")
    best_epoch: int = -1
    since: int = 0

    def update(self, epoch: int, score: float) -> bool:
        """Record ``epoch``'s score; return whether it is the best so far."""
        if score > self.best:
            self.best, self.best_epoch, self.since = score, epoch, 0
            return True
        self.since += 1
        return False

    @property
    def stop(self) -> bool:
        return self.since >= self.patience


@dataclass
class CachedPairs:
    """The training rows as indices into the base model's cached query and document embeddings."""

    rows: list[tuple[str, ...]]
    queries: list[str]
    documents: list[str]
    q_emb: torch.Tensor
    d_emb: torch.Tensor
    #: Row -> query index; row -> (positive, negatives...) document indices.
    qi: torch.Tensor
    di: torch.Tensor
    reused: bool
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def texts_embedded(self) -> int:
        return 0 if self.reused else len(self.queries) + len(self.documents)


def cache_pairs(model: Any, inp: TrainInput, routes: bool = True) -> CachedPairs:
    """Embed every distinct training text once with the frozen base model (queries through its query route,
    documents through its document route), or take the embeddings an earlier pod of this run kept."""
    import torch

    negs = negative_keys(inp.train)
    rows = [(r["anchor"], r["positive"], *(r[k] for k in negs)) for r in inp.train]
    t0 = time.perf_counter()
    model.eval()
    queries = sorted({r[0] for r in rows})
    documents = sorted({t for r in rows for t in r[1:]})
    w = inp.world
    if w is not None and w.distributed:  # the first process embeds (or reads the cache) once for every process
        (q_arr, q_cached), (d_arr, d_cached) = dist.broadcast(
            embed_both(model, inp, queries, documents) if w.main else None
        )
    else:
        (q_arr, q_cached), (d_arr, d_cached) = embed_both(model, inp, queries, documents)
    device = model.device
    q_index = {t: i for i, t in enumerate(queries)}
    d_index = {t: i for i, t in enumerate(documents)}
    seconds = time.perf_counter() - t0
    log.info("embedded %d queries and %d documents once in %.1fs", len(queries), len(documents), seconds)
    data = CachedPairs(
        rows=rows,
        queries=queries,
        documents=documents,
        q_emb=torch.from_numpy(q_arr).to(device),
        d_emb=torch.from_numpy(d_arr).to(device),
        qi=torch.tensor([q_index[r[0]] for r in rows]),
        di=torch.tensor([[d_index[t] for t in r[1:]] for r in rows]),
        reused=q_cached and d_cached,
        seconds=seconds,
    )
    training = inp.cfg.spec.training
    return add_mined(data, training.hard_negatives, training.seed) if training.hard_negatives.enabled else data


def add_mined(data: CachedPairs, spec: HardNegatives, seed: int) -> CachedPairs:
    """``data`` with each row's hard negatives, mined once from its cached embeddings (no encoder pass), as
    further document columns after any the data gave."""
    import torch

    t0 = time.perf_counter()
    mined = mine_cached(data.q_emb, data.d_emb, data.qi, data.di, Window.of(spec), seed)
    if mined is None:
        return data
    data.di = torch.cat([data.di, mined.to(data.di.device)], dim=1)
    data.rows = [(*row, *(data.documents[j] for j in neg)) for row, neg in zip(data.rows, mined.tolist(), strict=True)]
    data.details["mineSeconds"] = time.perf_counter() - t0
    log.info(
        "mined %d hard negatives per row from the cached embeddings in %.2fs", spec.count, data.details["mineSeconds"]
    )
    return data


def embed_both(model: Any, inp: TrainInput, queries: list[str], documents: list[str]) -> list[tuple[Any, bool]]:
    """The base model's query-route embeddings of ``queries`` and document-route embeddings of ``documents``."""
    return [
        frozen_embeddings(model, inp, route, texts) for route, texts in (("query", queries), ("document", documents))
    ]


def shard(batches: list[list[int]], world_size: int, rank: int) -> list[list[int]]:
    """This process's batches of an epoch under several processes: every ``world_size``-th, from ``rank``, of
    the largest multiple of ``world_size`` (so every process takes as many steps). Pure."""
    if world_size <= 1:
        return batches
    usable = len(batches) // world_size * world_size
    return batches[rank:usable:world_size]


def frozen_embeddings(model: Any, inp: TrainInput, route: str, texts: Sequence[str]) -> tuple[Any, bool]:
    """The frozen base model's ``route`` (query or document) embedding of each text, from the run's cache
    when an earlier pod of the run made it."""
    import torch

    cfg = inp.cfg
    bs = cfg.spec.evaluation.batch_size
    encode_route = model.encode_query if route == "query" else model.encode_document

    def encode(batch: list[str]) -> Any:
        with torch.no_grad():
            return encode_route(batch, batch_size=bs, convert_to_numpy=True, show_progress_bar=False)

    m = cfg.spec.model
    key = embedding_cache.cache_key([m.base, m.revision, m.max_seq_length, route], texts)
    main = inp.world is None or inp.world.main
    return embedding_cache.cached_embeddings(
        encode, texts, key, "adapter-embeddings", inp.own, inp.storage, checkpoint_prefix(inp), main
    )


def validation_ndcg(q: torch.Tensor, d_emb: torch.Tensor, positives: torch.Tensor, k: int = VALIDATION_K) -> float:
    """Mean NDCG@k of queries ``q`` (one row each) ranking every cached document by cosine similarity, the
    relevant one being ``positives[i]`` (one relevant document per row: NDCG is 1 / log2(rank + 1))."""
    import torch

    qn = torch.nn.functional.normalize(q, dim=-1)
    dn = torch.nn.functional.normalize(d_emb, dim=-1)
    scores = qn @ dn.T
    pos = scores.gather(1, positives.view(-1, 1))
    rank = (scores > pos).sum(dim=1)  # 0 = first
    gain = torch.where(rank < k, 1.0 / torch.log2(rank.float() + 2.0), torch.zeros_like(rank, dtype=torch.float32))
    return float(gain.mean())


def validation_plan(n: int, spec: EarlyStopping, seed: int) -> tuple[list[int], list[int]]:
    """The split, logged when asked for but too small to take."""
    train_idx, val_idx = split_rows(n, spec.validation_split, seed)
    if spec.validation_split > 0 and not val_idx:
        log.info(
            "training.earlyStopping.validationSplit %.2f of %d rows is under %d rows: every row trains, for "
            "training.epochs",
            spec.validation_split,
            n,
            MIN_VALIDATION_ROWS,
        )
    return train_idx, val_idx
