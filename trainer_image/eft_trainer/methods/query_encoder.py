"""``method: queryEncoder``: two towers. The document tower is the frozen base model (bit for bit, so an index
built with the base model stays valid); the query tower is a full trainable copy of the encoder.

The published model is ONE sentence-transformers model whose only module is a ``Router``
(``Router.for_query_document``): the ``query`` route holds the trained tower's modules (Transformer, Pooling,
Normalize...), the ``document`` route the base model's, and the default route is ``document``. So
``SentenceTransformer(path)`` loads it with stock modules only, ``encode_query`` runs the trained tower and
``encode_document`` (and plain ``encode``) the base model.

Training: every training text is embedded ONCE with the base model (as for ``queryAdapter``, kept with the
run's checkpoints: :mod:`eft_trainer.methods.cached_fit`); the document tower never runs again. The query
tower encodes each batch's queries and learns sentence-transformers' in-batch-negative loss against the
cached embeddings of the batch's positives and of its mined hard negatives (``training.hardNegatives``: more
document columns), summed over the Matryoshka dimensions. With ``CachedMultipleNegativesRanking`` (or as the
out-of-memory fallback) the queries are encoded in mini-batches with cached gradients (GradCache: the same
step in less memory). A seeded share of the rows is held out (``training.earlyStopping``): the epoch with the
best NDCG@10 on it is kept, and training stops after ``patience`` epochs without improvement.

The loop checkpoints every ``checkpointSteps`` and on SIGTERM (:mod:`eft_trainer.methods.encoder_checkpoint`),
so a retried pod resumes it to the same weights as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from eft_api.spec import Loss, TrainingSpec
from eft_trainer import distributed as dist
from eft_trainer.methods import Trained, TrainInput, encoder_checkpoint
from eft_trainer.methods.cached_fit import (
    CachedPairs,
    Stopper,
    cache_pairs,
    epoch_batches,
    shard,
    step_budget,
    validation_ndcg,
    validation_plan,
)
from eft_trainer.methods.encoder_checkpoint import LoopState
from eft_trainer.methods.full import checkpoint_prefix
from eft_trainer.methods.query_adapter import check_query_side_model, contrastive_loss, in_batch_loss
from eft_trainer.training import TrainStats

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def query_tower(base: Any) -> Any:
    """A trainable copy of the base model's modules as a model of its own (the base is left untouched)."""
    from sentence_transformers import SentenceTransformer

    tower = SentenceTransformer(modules=[copy.deepcopy(m) for m in base], device=str(base.device))
    tower.prompts = dict(base.prompts)
    return tower


def two_towers(base: Any, tower: Any) -> Any:
    """One model: a Router whose query route is ``tower``'s modules and whose document route is the base's."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Router

    router = Router.for_query_document(query_modules=list(tower), document_modules=list(base))
    model = SentenceTransformer(modules=[router], device=str(base.device))
    model.prompts = dict(base.prompts)
    model.default_prompt_name = base.default_prompt_name
    model.similarity_fn_name = base.similarity_fn_name
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    return model


def towers_of(model: Any) -> tuple[Any, Any] | None:
    """(query modules, document modules) of a two-tower model, or None."""
    from sentence_transformers.sentence_transformer.modules import Router

    first = model[0] if len(model) else None
    if not isinstance(first, Router):
        return None
    return first.sub_modules["query"], first.sub_modules["document"]


def embed(tower: Any, texts: Sequence[str], prompt: str | None) -> torch.Tensor:
    """The tower's embeddings of ``texts`` (with the query prompt), gradients flowing."""
    from sentence_transformers.util import batch_to_device

    feats = batch_to_device(tower.preprocess(list(texts), prompt=prompt), tower.device)
    out: torch.Tensor = tower(feats)["sentence_embedding"]
    return out


def encoder_step(
    tower: Any, texts: Sequence[str], docs: list[torch.Tensor], loss_fn: Any, dims: list[int], mini: int | None
) -> float:
    """Backpropagate the loss of one batch into the tower; with ``mini``, GradCache: embed the queries in
    mini-batches without gradients, take the loss's gradient with respect to the embeddings, then embed each
    mini-batch again (replaying its random state: the same dropout) and backpropagate that gradient."""
    import torch

    from eft_trainer.methods.encoder_checkpoint import rng_state, set_rng_state

    prompt = tower.prompts.get("query")
    if mini is None or mini >= len(texts):
        loss = contrastive_loss(loss_fn, embed(tower, texts, prompt), docs, dims)
        loss.backward()  # type: ignore[no-untyped-call]
        return float(loss.detach())
    chunks = [texts[i : i + mini] for i in range(0, len(texts), mini)]
    states, parts = [], []
    with torch.no_grad():
        for c in chunks:
            states.append(rng_state())
            parts.append(embed(tower, c, prompt))
    after = rng_state()
    reps = torch.cat(parts).requires_grad_(True)
    loss = contrastive_loss(loss_fn, reps, docs, dims)
    loss.backward()  # type: ignore[no-untyped-call]
    assert reps.grad is not None
    for c, state, grad in zip(chunks, states, reps.grad.split(mini), strict=True):  # type: ignore[no-untyped-call]
        set_rng_state(state)
        (embed(tower, c, prompt) * grad).sum().backward()  # type: ignore[no-untyped-call]
    set_rng_state(after)
    return float(loss.detach())


@contextlib.contextmanager
def sigterm_flag() -> Iterator[list[bool]]:
    """A flag set by SIGTERM while the loop runs (the loop checkpoints at the end of the step and stops)."""
    flag = [False]

    def handler(signum: int, frame: FrameType | None) -> None:
        log.warning("received SIGTERM: checkpointing the query encoder at the end of this step and stopping")
        flag[0] = True

    previous: Any = None
    with contextlib.suppress(ValueError):  # only the main thread can take signals
        previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield flag
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


@dataclass
class Loop:
    """What the training loop works with."""

    tower: Any
    data: CachedPairs
    plan: tuple[list[int], list[int]]
    spec: TrainingSpec
    loss_fn: Any
    dims: list[int]
    opt: Any
    sched: Any
    total: int
    mini: int | None
    ckpt: Path
    inp: TrainInput


def score(loop: Loop) -> float:
    """NDCG@10 of the held-out rows' queries through the tower against every cached document."""
    import torch

    val = loop.plan[1]
    idx = torch.tensor(val)
    queries = [loop.data.queries[int(i)] for i in loop.data.qi[idx]]
    loop.tower.eval()
    with torch.no_grad():
        bs = loop.inp.cfg.spec.evaluation.batch_size
        q = torch.cat(
            [
                embed(loop.tower, queries[i : i + bs], loop.tower.prompts.get("query"))
                for i in range(0, len(queries), bs)
            ]
        )
    loop.tower.train()
    return validation_ndcg(q, loop.data.d_emb, loop.data.di[idx, 0])


def checkpoint(loop: Loop, state: LoopState, best: dict[str, Any] | None) -> None:
    if loop.inp.world is None or loop.inp.world.main:
        encoder_checkpoint.save(loop.ckpt, loop.tower, loop.opt, loop.sched, state, best)
        encoder_checkpoint.mirror(loop.ckpt, loop.inp.storage, checkpoint_prefix(loop.inp))


def own_batches(
    w: dist.World | None, data: CachedPairs, plan: tuple[list[int], list[int]], spec: TrainingSpec, epoch: int
) -> list[list[int]]:
    """The batches of ``epoch`` that process ``w`` trains (all of them in one process)."""
    batches = epoch_batches(data.rows, plan[0], spec.batch_size, spec.seed, epoch)
    return shard(batches, w.size, w.rank) if w is not None and w.distributed else batches


def world_size(loop: Loop) -> int:
    w = loop.inp.world
    return w.size if w is not None and w.distributed else 1


def average_gradients(loop: Loop) -> None:
    """Under several processes: every process's gradient becomes their mean (the same update everywhere)."""
    w = loop.inp.world
    if w is None or not w.distributed:
        return
    import torch.distributed

    for p in loop.tower.parameters():
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad)
            p.grad /= w.size


def stop_requested(loop: Loop, flag: list[bool]) -> bool:
    """Whether SIGTERM reached this process, or (under several processes) any of them: all stop at one step."""
    w = loop.inp.world
    if w is not None and w.distributed:
        flag[0] = dist.any_rank(flag[0])
    return flag[0]


def run_epoch(loop: Loop, state: LoopState, best: dict[str, Any] | None, stop: list[bool]) -> bool:
    """Train the rest of ``state.epoch``; return False when SIGTERM stopped it (after a checkpoint)."""
    batches = own_batches(loop.inp.world, loop.data, loop.plan, loop.spec, state.epoch)
    data = loop.data
    for i in range(state.next_batch, len(batches)):
        b = batches[i]
        cols = data.di[b]
        docs = [data.d_emb[cols[:, j]] for j in range(cols.shape[1])]
        loop.opt.zero_grad()
        loss = encoder_step(
            loop.tower, [data.queries[int(q)] for q in data.qi[b]], docs, loop.loss_fn, loop.dims, loop.mini
        )
        average_gradients(loop)
        loop.opt.step()
        loop.sched.step()
        state.step, state.samples, state.next_batch = state.step + 1, state.samples + len(b) * world_size(loop), i + 1
        state.losses.append(loss)
        state.epoch_losses.append(loss)
        stopping = stop_requested(loop, stop)
        if stopping or state.step % loop.spec.checkpoint_steps == 0:
            checkpoint(loop, state, best)
        if stopping:
            return False
        if state.step >= loop.total:
            break
    return True


def end_epoch(loop: Loop, state: LoopState, best: dict[str, Any] | None) -> dict[str, Any] | None:
    """Record the epoch on the curve (and its validation score); the best weights so far."""
    point = {"epoch": float(state.epoch), "loss": sum(state.epoch_losses) / max(1, len(state.epoch_losses))}
    if loop.plan[1]:
        point["validationNdcg@10"] = score(loop)
        stopper = Stopper(loop.spec.early_stopping.patience, state.best, state.best_epoch, state.since)
        if stopper.update(state.epoch, point["validationNdcg@10"]):
            best = {k: v.detach().clone() for k, v in loop.tower.state_dict().items()}
        state.best, state.best_epoch, state.since = stopper.best, stopper.best_epoch, stopper.since
    state.curve.append(point)
    state.epoch, state.next_batch, state.epoch_losses = state.epoch + 1, 0, []
    return best


def train_loop(
    loop: Loop, state: LoopState, best: dict[str, Any] | None
) -> tuple[LoopState, dict[str, Any] | None, bool]:
    """Epochs until the step budget is spent or early stopping ends it; (state, best weights, interrupted)."""
    with sigterm_flag() as stop:
        while state.step < loop.total and state.since < loop.spec.early_stopping.patience:
            loop.tower.train()
            if not run_epoch(loop, state, best, stop):
                return state, best, True
            best = end_epoch(loop, state, best)
    return state, best, False


def start(loop: Loop) -> tuple[LoopState, dict[str, Any] | None, int]:
    """A fresh loop state (epoch 0's score: the base model's), or the checkpoint's; and the step resumed from."""
    payload = encoder_checkpoint.load(loop.ckpt, loop.inp.storage, checkpoint_prefix(loop.inp))
    if payload is not None:
        state, best = encoder_checkpoint.restore(payload, loop.tower, loop.opt, loop.sched)
        return state, best, state.step
    state, best = LoopState(), None
    if loop.plan[1]:
        base_score = score(loop)
        state.curve.append({"epoch": 0.0, "validationNdcg@10": base_score})
        state.best, state.best_epoch = base_score, 0
        best = {k: v.detach().clone() for k, v in loop.tower.state_dict().items()}
    return state, best, 0


def make_loop(inp: TrainInput, tower: Any, data: CachedPairs, dim: int) -> Loop:
    import torch
    from transformers import get_scheduler

    spec = inp.cfg.spec.training
    plan = validation_plan(len(data.rows), spec.early_stopping, spec.seed)
    w = inp.world

    def batches_in(epoch: int) -> int:  # this process's share
        return len(own_batches(w, data, plan, spec, epoch))

    total = inp.max_steps if inp.max_steps > 0 else step_budget(spec.epochs, batches_in)
    params = [p for p in tower.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec.learning_rate)
    warmup = math.ceil(spec.warmup_ratio * total)
    sched = get_scheduler(spec.scheduler, opt, num_warmup_steps=warmup, num_training_steps=total)
    cached = spec.mini_batch_size if spec.loss is Loss.CACHED_MULTIPLE_NEGATIVES_RANKING else None
    mini = inp.cached_mini_batch or cached
    # In the pod's shared work dir: the first process writes it, every process of the pod can read it.
    ckpt = inp.work / "checkpoints" / encoder_checkpoint.FOLDER / encoder_checkpoint.FILE
    dims = list(spec.matryoshka_dims) or [dim]
    return Loop(tower, data, plan, spec, in_batch_loss(tower, spec), dims, opt, sched, total, mini, ckpt, inp)


class QueryEncoder:
    """The base model as the frozen document tower; a full copy trained as the query tower. No re-indexing."""

    name = "queryEncoder"
    reindex_required = False

    def train(self, inp: TrainInput) -> Trained:
        import torch

        base = inp.model
        dim = check_query_side_model(base, inp.cfg, self.name)
        data = cache_pairs(base, inp)
        torch.manual_seed(inp.cfg.spec.training.seed)
        tower = query_tower(base)
        loop = make_loop(inp, tower, data, dim)
        state, best, resumed = start(loop)
        t0 = time.perf_counter()
        state, best, interrupted = train_loop(loop, state, best)
        seconds = time.perf_counter() - t0
        if best is not None and not interrupted:
            tower.load_state_dict(best)
        tower.eval()
        model = two_towers(base, tower)
        done = state.step - resumed
        stats = TrainStats(
            seconds=seconds,
            steps=state.step,
            samples=state.samples,
            samples_per_second=(done * loop.spec.batch_size) / seconds if seconds > 0 else 0.0,
            precision="fp32",
            resumed_from_step=resumed,
            final_loss=sum(state.losses[-10:]) / len(state.losses[-10:]) if state.losses else None,
            interrupted=interrupted,
        )
        return Trained(model, stats, self._details(loop, state, data, tower))

    def _details(self, loop: Loop, state: LoopState, data: CachedPairs, tower: Any) -> dict[str, Any]:
        val = loop.plan[1]
        return {
            "method": self.name,
            "towers": 2,
            "queryTowerParameters": sum(p.numel() for p in tower.parameters()),
            "textsEmbedded": data.texts_embedded,
            "embeddingsReused": data.reused,
            "embedSeconds": data.seconds,
            "hardNegativeColumns": int(data.di.shape[1]) - 1,
            **data.details,
            "validationRows": len(val),
            "epochsRun": state.epoch - 1,
            "bestEpoch": state.best_epoch if val else state.epoch - 1,
            **({"validationNdcg@10": state.best, "validationCurve": state.curve} if val else {}),
            **({"gradientCacheMiniBatch": loop.mini} if loop.mini else {}),
        }

    def save_extras(self, trained: Any, out: Path) -> list[str]:
        return []
