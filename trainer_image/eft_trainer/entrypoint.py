"""The trainer's entrypoint: from a corpus in S3 to a published, measured embedding model.

Inputs (all optional except the run config):

* ``EFT_RUN_CONFIG``: path of the run config JSON (default ``/etc/eft/run-config.json``), seam 2.
* ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``: S3 credentials (from the
  spec's credentialsSecret); or files of those names in ``EFT_S3_CREDENTIALS_DIR``.
* ``EFT_TERMINATION_LOG``: where to write the termination message (default ``/dev/termination-log``).
* ``EFT_DATA_ROOT``: development only: the folder that stands in for S3 (``s3://bucket/key`` is
  ``$EFT_DATA_ROOT/bucket/key``, read and written there; :func:`eft_trainer.storage.open_store`).
* ``HF_HUB_OFFLINE=1``: load hub models from the local cache only (``settings.modelCacheDir`` maps hub ids
  to folders ``<dir>/<org>/<name>``).

:func:`run_job` lists the stages (:mod:`eft_trainer.stages`, one module each); :func:`main` runs it, writes
the termination message and returns the exit code of the outcome's class (``eft_api.contract.ExitCode``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from eft_api.contract import RunConfig, TerminationMessage
from eft_trainer import distributed as dist
from eft_trainer import methods, registry
from eft_trainer.config import load_run_config
from eft_trainer.distributed import World
from eft_trainer.errors import TrainerError, redact
from eft_trainer.launch import launch
from eft_trainer.metrics import Progress
from eft_trainer.oom import is_oom
from eft_trainer.stages import (
    augment,
    baselines,
    check,
    gate,
    measure,
    merge,
    outcome,
    pretrain,
    publish,
    report,
    source,
    train,
)
from eft_trainer.stages.context import RunContext, open_storage, start

log = logging.getLogger("eft_trainer")


class _Redact(logging.Filter):
    """Every credential value out of the message AND the traceback (formatted here, then redacted)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
            record.exc_info = None  # the formatter would format the raw exception again
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def setup_logging() -> None:
    root = logging.getLogger()
    if not any(isinstance(f, _Redact) for h in root.handlers for f in h.filters):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(_Redact())
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    for noisy in ("botocore", "boto3", "s3transfer", "urllib3", "httpx", "datasets", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_job(
    cfg: RunConfig,
    *,
    callbacks: Sequence[Any] = (),
    max_steps: int = -1,
    progress: Progress | None = None,
    world: World | None = None,
) -> TerminationMessage:
    """Run every stage; raise TrainerError (or anything) on failure. ``callbacks`` go to the HF Trainer.

    Under several processes (``world``) every rank fetches, checks and trains; rank 0 alone evaluates (base
    and fine-tuned), mines hard negatives (broadcast to the others) and publishes. The other ranks return
    after training with a message of their own that nobody publishes. A published outcome that
    ``spec.output.registry`` wants becomes a registered model version (also when a retry finds the run
    already published but not yet registered)."""
    storage = open_storage(cfg, dict(os.environ))
    msg = publish.already_published(cfg, storage)
    if msg is None:
        ctx = start(cfg, storage, callbacks=callbacks, max_steps=max_steps, progress=progress, world=world)
        msg = _stages(ctx)
    if (world or World()).main:
        msg = registry.after_publish(cfg, msg, storage)
    return msg


def _stages(ctx: RunContext) -> TerminationMessage:
    """The stages, in order: what :func:`run_job` runs for a run not published yet."""
    cfg = ctx.cfg
    src = source.run(ctx)
    checked = check.run(ctx, src)
    base_model = check.load_base(ctx, src)
    if not ctx.world.main:
        return train.train_only(ctx, base_model.model, checked.train)
    base = measure.base(ctx, base_model.model, checked)
    weights = merge.base_weights(ctx, base_model.model)  # training.merge interpolates towards them
    method = methods.for_spec(cfg.spec)
    reused = cfg.reuse_model_from  # the same training digest as an earlier run: re-measure and re-gate only
    if reused is not None:
        pre, trained = None, train.reused(ctx)
    else:
        rows = augment.run(ctx, base_model.model, checked)
        pre = pretrain.run(ctx, base_model.model, rows, checked)
        trained = train.run(ctx, pre.model if pre else base_model.model, rows)
    reuse = not method.reindex_required and pre is None and reused is None
    tuned = measure.finetuned(ctx, trained, checked, base, reuse)
    teacher = measure.teacher(ctx, trained, checked)
    corpus = base.result.corpus_embeddings if reuse else None
    merged = merge.run(ctx, checked, weights, trained.model, base, tuned, corpus)
    board = baselines.run(ctx, checked, base, merged.tuned)
    verdict = gate.run(ctx, checked.guard_sets, base, merged.tuned, board)
    results = report.Results(src, base_model, checked, method, pre, trained, base, merged.tuned, teacher, verdict)
    results.board, results.merge, results.reused, results.model = board, merged.section, reused, merged.model
    rep = report.run(ctx, results)
    arts = publish.run(ctx, rep, merged.model, method, verdict.rejected, trained.model)
    generation = src.documents.generated.summary() if src.documents else None
    return outcome.run(ctx, rep, verdict, arts, generation)


def main(argv: list[str] | None = None, *, callbacks: Sequence[Any] = (), max_steps: int = -1) -> int:
    """Load the run config, run the job, write the termination message, return the exit code.

    ``eft-trainer torchrun ARGS...`` starts ``torchrun ARGS...`` instead (:mod:`eft_trainer.launch`); under
    torchrun each worker runs this function: rank 0 as described, the others train, then wait at a barrier
    for rank 0 to finish and exit 0.
    """
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["torchrun"]:
        return launch(args[1:])
    setup_logging()
    run_id: str | None = None
    progress = None
    world = World()
    ended = False  # the run reached its end (published, rejected or already published) on this rank
    try:
        world = dist.from_env()
        dist.init(world)
        cfg = load_run_config()
        run_id = cfg.run.run_id
        progress = Progress(cfg.settings.metrics_port if world.main else 0)
        msg = run_job(cfg, callbacks=callbacks, max_steps=max_steps, progress=progress, world=world)
        ended = True
    except Exception as exc:
        if not isinstance(exc, TrainerError) and not is_oom(exc):
            log.exception("the trainer crashed")
        msg = outcome.failure(exc, run_id)
        if progress is not None:
            progress.set_phase("failed")
    finally:
        if progress is not None:
            progress.close()
    code = outcome.finish(msg, world)
    if world.distributed and ended:
        # The other ranks wait here until rank 0 has evaluated and published; a rank that failed exits at
        # once instead, and torchrun stops the others (the attempt fails; the retry resumes).
        dist.barrier()
        dist.close()
    return code if world.main else 0 if ended else code
