"""Train: the spec's method (:mod:`eft_trainer.methods`), with the out-of-memory fallback (:mod:`eft_trainer.oom`).

In: the model to train and the training rows. Out: :class:`eft_trainer.methods.Trained`. A rank other than 0
trains its share and ends here (:func:`train_only`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eft_api.contract import CHECKPOINTS_DIR, OomFallback, Reason, RunConfig, TerminationMessage
from eft_trainer import distributed as dist
from eft_trainer import methods, oom
from eft_trainer.distributed import World
from eft_trainer.errors import Interrupted, OutOfMemory
from eft_trainer.model_ref import resolve_ref
from eft_trainer.stages.augment import receive
from eft_trainer.stages.context import RunContext
from eft_trainer.storage import S3Uri, Store
from eft_trainer.training import TrainStats

Rows = list[dict[str, Any]]
log = logging.getLogger("eft_trainer")


def oom_fallback(summary: dict[str, Any] | None) -> OomFallback | None:
    """The termination message's part of the report's ``training.oomFallback``."""
    if not summary:
        return None
    keys = {f.alias for f in OomFallback.model_fields.values()}
    return OomFallback.model_validate({k: v for k, v in summary.items() if k in keys})


def oom_marker(cfg: RunConfig, storage: Store) -> oom.MarkerStore:
    """Where attempts leave their out-of-memory record: beside the mirrored checkpoints."""
    return oom.S3Marker(storage, S3Uri.parse(cfg.run.output_prefix).join(CHECKPOINTS_DIR + oom.MARKER))


def raise_if_interrupted(stats: Any) -> None:
    if stats.interrupted:
        raise Interrupted(f"stopped by SIGTERM at step {stats.steps}; the checkpoint is mirrored and a retry resumes")


def _start_guard(cfg: RunConfig, storage: Store, w: World) -> oom.Guard:
    """Rank 0 reads (and updates) the marker; every rank trains with rank 0's plan."""
    training = cfg.spec.training
    guard = oom.Guard(oom_marker(cfg, storage), training, main=w.main)
    guard.plan, guard.attempt, guard.state = dist.broadcast(
        (guard.start(), guard.attempt, guard.state) if w.main else None
    )
    if guard.plan is None:
        ooms = guard.state.out_of_memory
        raise OutOfMemory(
            f"out of memory in training {len(ooms)} time(s) (see {oom.MARKER} beside the checkpoints), the last "
            f"with {oom.describe(ooms[-1].setup)}; nothing smaller is left to try: {oom.OOM_ADVICE}"
        )
    return guard


def _out_of_memory(guard: oom.Guard, step: int, exc: BaseException, cfg: RunConfig) -> OutOfMemory:
    """The error to raise after an out-of-memory failure, with the next attempt's plan (if any) recorded."""
    assert guard.plan is not None
    tried = guard.plan.setup
    nxt = guard.failed(step or None, exc)
    said = f"out of memory in training at step {step} with {oom.describe(tried)}"
    if nxt is None or not nxt.fallback:
        return OutOfMemory(f"{said}; nothing smaller is left to try: {oom.OOM_ADVICE}")
    summary = oom.fallback_summary(cfg.spec.training, nxt, guard.attempt + 1, guard.state.out_of_memory)
    return OutOfMemory(
        f"{said}: the next attempt trains with {oom.describe(nxt.setup)}, the same batch in less memory",
        oom_fallback(summary),
    )


def train_model(
    model: Any,
    cfg: RunConfig,
    train: Rows,
    storage: Store,
    work: Path,
    callbacks: Sequence[Any] = (),
    max_steps: int = -1,
    world: World | None = None,
) -> methods.Trained:
    """Train with the spec's method; after an out-of-memory failure of an earlier attempt, with the cheaper
    setup :mod:`eft_trainer.oom` plans (an out-of-memory failure here is recorded for the next attempt, and
    raised as :class:`OutOfMemory`)."""
    method = methods.for_spec(cfg.spec)
    inp = methods.TrainInput(model, cfg, train, storage, work, callbacks, max_steps, world)
    if not oom.recoverable(cfg.spec.training):
        return method.train(inp)
    guard = _start_guard(cfg, storage, world or World())
    assert guard.plan is not None
    tracker = oom.step_tracker()
    inp.callbacks = [*callbacks, tracker]
    inp.cached_mini_batch = guard.plan.cached_mini_batch
    try:
        trained = method.train(inp)
    except Exception as exc:
        if not oom.is_oom(exc):
            guard.ended()
            raise
        raise _out_of_memory(guard, tracker.step, exc, cfg) from None
    except BaseException:
        guard.ended()  # KeyboardInterrupt, SystemExit: not an out-of-memory failure
        raise
    guard.ended()
    summary = guard.summary()
    if summary is not None:
        trained.details["oomFallback"] = summary
    return trained


def run(ctx: RunContext, model: Any, train: Rows) -> methods.Trained:
    with ctx.stage("train"):
        trained = train_model(
            model,
            ctx.cfg,
            train,
            ctx.storage,
            ctx.work,
            callbacks=[ctx.progress.callback(ctx.cfg.spec.training.batch_size * ctx.world.size), *ctx.callbacks],
            max_steps=ctx.max_steps,
            world=ctx.world,
        )
    raise_if_interrupted(trained.stats)
    return trained


def reused(ctx: RunContext) -> methods.Trained:
    """An earlier run's trained model (``reuseModelFrom``: the same training digest), as if trained now: 0 steps."""
    reuse = ctx.cfg.reuse_model_from
    assert reuse is not None
    with ctx.stage("train"):
        where = resolve_ref(reuse.uri, ctx.storage, ctx.own / "reused-model", "reuseModelFrom", None)
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(where, trust_remote_code=ctx.cfg.spec.model.trust_remote_code)
    log.info("reused the trained model of run %s from %s: no training", reuse.run_id, reuse.uri)
    stats = TrainStats(0.0, 0, 0, 0.0, "none", 0, None, False)
    return methods.Trained(model, stats, {"reusedModelFrom": reuse.run_id})


def train_only(ctx: RunContext, model: Any, train: Rows) -> TerminationMessage:
    """A rank other than 0: take rank 0's mined rows, train its share, and leave the rest to rank 0."""
    cfg, w = ctx.cfg, ctx.world
    if cfg.reuse_model_from is not None:  # a re-gate: rank 0 measures the reused model alone
        msg = f"rank {w.rank}: nothing to train (run {cfg.reuse_model_from.run_id}'s model is re-gated by rank 0)"
        return TerminationMessage(outcome="Succeeded", reason=Reason.SUCCEEDED, message=msg, run_id=cfg.run.run_id)
    train = receive(ctx, train)
    stats = train_model(model, cfg, train, ctx.storage, ctx.work, ctx.callbacks, ctx.max_steps, world=w).stats
    raise_if_interrupted(stats)
    return TerminationMessage(
        outcome="Succeeded",
        reason=Reason.SUCCEEDED,
        message=f"rank {w.rank} trained {stats.steps} steps; rank 0 evaluates and publishes",
        run_id=cfg.run.run_id,
    )
