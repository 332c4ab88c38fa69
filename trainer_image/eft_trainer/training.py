"""Fine-tune with ``SentenceTransformerTrainer``: loss (+ Matryoshka), sampler, precision, seed, checkpoints
(:mod:`eft_trainer.checkpoints`: resume, mirror, stop on SIGTERM)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eft_api.spec import (
    IN_BATCH_NEGATIVE_LOSSES,
    DataFormat,
    Loss,
    TrainingSpec,
)
from eft_trainer import distributed as dist
from eft_trainer.checkpoints import fetch_checkpoint, local_checkpoint
from eft_trainer.distributed import World
from eft_trainer.oom import CACHED_VARIANT
from eft_trainer.storage import S3Uri, Store

log = logging.getLogger(__name__)


def pick_precision(precision: str, cuda: bool, bf16_ok: bool, cpu_bf16: bool = False) -> str:
    """The precision to train in: ``auto`` is bf16 where supported, fp16 on other GPUs, fp32 on CPU.

    On CPU only an explicit ``bf16`` on a CPU with bf16 instructions (``cpu_bf16``) trains in bf16 autocast:
    it changes the numbers, so ``auto`` stays fp32 there (and emulated bf16 would be slower than fp32)."""
    if not cuda:
        return "bf16" if precision == "bf16" and cpu_bf16 else "fp32"
    if precision == "auto":
        return "bf16" if bf16_ok else "fp16"
    if precision == "bf16" and not bf16_ok:
        return "fp16"
    return precision


#: The sentence-transformers loss class of each spec loss (in ``sentence_transformer.losses``).
LOSS_CLASSES: dict[Loss, str] = {
    Loss.MULTIPLE_NEGATIVES_RANKING: "MultipleNegativesRankingLoss",
    Loss.CACHED_MULTIPLE_NEGATIVES_RANKING: "CachedMultipleNegativesRankingLoss",
    Loss.MULTIPLE_NEGATIVES_SYMMETRIC_RANKING: "MultipleNegativesSymmetricRankingLoss",
    Loss.TRIPLET: "TripletLoss",
    Loss.COSENT: "CoSENTLoss",
    Loss.ANGLE: "AnglELoss",
    Loss.COSINE_SIMILARITY: "CosineSimilarityLoss",
    Loss.BATCH_ALL_TRIPLET: "BatchAllTripletLoss",
    Loss.BATCH_HARD_TRIPLET: "BatchHardTripletLoss",
    Loss.BATCH_SEMI_HARD_TRIPLET: "BatchSemiHardTripletLoss",
    Loss.MSE: "MSELoss",
    Loss.MARGIN_MSE: "MarginMSELoss",
}


def loss_kwargs(spec: TrainingSpec, world_size: int = 1) -> dict[str, Any]:
    """Keyword arguments of the loss class. Under several processes an in-batch-negative loss gathers the
    embeddings of every process (``gather_across_devices``), so each anchor sees the positives of all
    ``world_size * batchSize`` rows as negatives: the negatives grow with the GPUs. Pure."""
    kw: dict[str, Any] = {}
    if spec.loss is Loss.CACHED_MULTIPLE_NEGATIVES_RANKING:
        kw["mini_batch_size"] = spec.mini_batch_size
    if world_size > 1 and spec.loss in IN_BATCH_NEGATIVE_LOSSES:
        kw["gather_across_devices"] = True
    return kw


def build_loss(model: Any, spec: TrainingSpec, world_size: int = 1, cached_mini_batch: int | None = None) -> Any:
    """The configured loss, wrapped in MatryoshkaLoss when dimensions are given.

    ``cached_mini_batch``: the out-of-memory fallback (:mod:`eft_trainer.oom`): the loss's cached variant
    with this mini-batch instead (the same batch and so the same in-batch negatives)."""
    from sentence_transformers.sentence_transformer import losses  # heavy: torch

    name, kw = LOSS_CLASSES[spec.loss], loss_kwargs(spec, world_size)
    if cached_mini_batch is not None:
        name, kw = CACHED_VARIANT[spec.loss] + "Loss", {**kw, "mini_batch_size": cached_mini_batch}
    inner = getattr(losses, name)(model, **kw)
    if spec.matryoshka_dims:
        return losses.MatryoshkaLoss(model, inner, matryoshka_dims=list(spec.matryoshka_dims))
    return inner


def to_dataset(records: Sequence[dict[str, Any]], fmt: DataFormat, loss: Loss) -> Any:
    """A ``datasets.Dataset`` whose column order is what the loss expects."""
    import datasets

    if fmt is DataFormat.LABELED_TEXTS:
        labels = {v: i for i, v in enumerate(sorted({str(r["label"]) for r in records}))}
        return datasets.Dataset.from_dict(
            {"text": [r["text"] for r in records], "label": [labels[str(r["label"])] for r in records]}
        )
    if fmt is DataFormat.SCORED_PAIRS:
        return datasets.Dataset.from_dict(
            {
                "sentence1": [r["sentence1"] for r in records],
                "sentence2": [r["sentence2"] for r in records],
                "score": [float(r["score"]) for r in records],
            }
        )
    cols = ["anchor", "positive"]
    negs = sorted({k for r in records for k in r if k.startswith("negative_")}, key=lambda k: int(k.split("_")[1]))
    if loss is Loss.TRIPLET:
        negs = negs[:1]  # the run config's validator allows Triplet with triplets only, which have negatives
    rows = [r for r in records if all(isinstance(r.get(c), str) and r.get(c) for c in negs)]
    return datasets.Dataset.from_dict({c: [r[c] for r in rows] for c in cols + negs})


# ---------------------------------------------------------------- bf16 on CPU

#: Batches pad to a multiple of this many tokens when training in bf16 on CPU (bf16 alone gained nothing
#: there; with the padding, 1.13-1.36x the plain recipe by CPU time in bench/bench_train_throughput.py).
CPU_BF16_PAD = 8


def cpu_has_bf16(cpuinfo: str) -> bool:
    """Whether /proc/cpuinfo's flags name bf16 instructions (AVX512-BF16 or AMX-BF16). Pure."""
    return bool(set(cpuinfo.split()) & {"avx512_bf16", "amx_bf16"})


@contextlib.contextmanager
def padded_to_multiple(model: Any, multiple: int | None) -> Iterator[None]:
    """While training, text batches pad to a multiple of ``multiple`` tokens; the saved model is unchanged."""
    modules = [m for m in model.modules() if isinstance(getattr(m, "processing_kwargs", None), dict)]
    saved = [m.processing_kwargs for m in modules]
    if multiple:
        for m in modules:
            kw = m.processing_kwargs
            m.processing_kwargs = {**kw, "text": {**kw.get("text", {}), "pad_to_multiple_of": multiple}}
    try:
        yield
    finally:
        for m, kw in zip(modules, saved, strict=True):
            m.processing_kwargs = kw


@dataclass
class TrainStats:
    seconds: float
    steps: int
    samples: int
    samples_per_second: float
    precision: str
    resumed_from_step: int
    final_loss: float | None
    interrupted: bool


def device_precision(spec: TrainingSpec) -> tuple[str, bool]:
    """(precision to train in, whether CUDA is used); allows TF32 matmuls on a GPU."""
    import torch  # heavy: only a training run pays for it

    cuda = torch.cuda.is_available()
    cpuinfo = Path("/proc/cpuinfo")
    cpu_bf16 = not cuda and cpuinfo.is_file() and cpu_has_bf16(cpuinfo.read_text())
    precision = pick_precision(spec.precision, cuda, cuda and torch.cuda.is_bf16_supported(), cpu_bf16)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return precision, cuda


def batch_sampler(spec: TrainingSpec, fmt: DataFormat, own_loss: bool, group_by_length: bool) -> Any:
    """The batch sampler: no duplicate texts for in-batch negatives, label groups for labelled texts."""
    from sentence_transformers.base.sampler import BatchSamplers  # heavy: imports torch

    if own_loss:
        return BatchSamplers.BATCH_SAMPLER
    if spec.loss in IN_BATCH_NEGATIVE_LOSSES:
        from eft_trainer.sampler import LengthGroupedNoDuplicatesBatchSampler  # heavy: imports torch

        return LengthGroupedNoDuplicatesBatchSampler if group_by_length else BatchSamplers.NO_DUPLICATES
    if fmt is DataFormat.LABELED_TEXTS and spec.loss is not Loss.MSE:  # MSE's labels are teacher embeddings
        return BatchSamplers.GROUP_BY_LABEL
    return BatchSamplers.BATCH_SAMPLER


def find_resume(out: Path, storage: Store, prefix: S3Uri | None, w: World) -> tuple[Path | None, int]:
    """The checkpoint to resume from (local, else mirrored) and its step. The first process of each node
    (pod) fetches the mirrored checkpoint for the processes of its node."""
    resume = local_checkpoint(out)
    if resume is None and w.local_main and prefix is not None:
        resume = fetch_checkpoint(storage, prefix, out)
    if w.distributed:
        dist.barrier()
        resume = local_checkpoint(out)
    step = 0
    if resume is not None:
        step = int(json.loads((resume / "trainer_state.json").read_text())["global_step"])
        log.info("resuming from %s (step %d)", resume.name, step)
    return resume, step


def training_arguments(
    spec: TrainingSpec, out: Path, precision: str, cuda: bool, sampler: Any, w: World, max_steps: int, workers: int
) -> Any:
    """The HF training arguments of a run."""
    from sentence_transformers import SentenceTransformerTrainingArguments  # heavy: imports torch

    return SentenceTransformerTrainingArguments(
        output_dir=str(out),
        num_train_epochs=spec.epochs,
        max_steps=max_steps,
        per_device_train_batch_size=spec.batch_size,
        learning_rate=spec.learning_rate,
        warmup_steps=spec.warmup_ratio,  # a float below 1 is a ratio in transformers 5
        lr_scheduler_type=spec.scheduler,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        tf32=True if cuda and precision != "fp32" else None,
        seed=spec.seed,
        data_seed=spec.seed,
        batch_sampler=sampler,
        eval_strategy="no",
        save_strategy="steps",
        save_steps=spec.checkpoint_steps,
        save_total_limit=2,
        logging_steps=10,
        report_to="none",
        dataloader_num_workers=workers,
        dataloader_pin_memory=cuda,
        disable_tqdm=not sys.stderr.isatty(),
        ddp_timeout=int(os.environ.get(dist.TIMEOUT_ENV, dist.DEFAULT_TIMEOUT)),
        # Several processes on CPU: transformers runs DDP over gloo only when told (else each process would
        # train every batch alone).
        # bf16 on CPU too: transformers refuses bf16 without a GPU unless told it trains on CPU.
        use_cpu=(w.distributed or precision == "bf16") and not cuda,
        ddp_backend="gloo" if w.distributed and not cuda else None,
    )


def _fit(trainer: Any, model: Any, resume: Path | None, pad: int | None, on_sigterm: Any) -> tuple[Any, float]:
    """Run the HF Trainer (from ``resume``), SIGTERM handled by ``on_sigterm``; its result and the seconds."""
    t0 = time.perf_counter()
    previous: Any = None
    with contextlib.suppress(ValueError):  # only the main thread can take signals
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with padded_to_multiple(model, pad):
            result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return result, time.perf_counter() - t0


def train(
    model: Any,
    dataset: Any,
    spec: TrainingSpec,
    fmt: DataFormat,
    work_dir: Path,
    *,
    storage: Store,
    checkpoint_prefix: S3Uri | None = None,
    callbacks: Sequence[Any] = (),
    max_steps: int = -1,
    num_workers: int = 0,
    group_by_length: bool = True,
    world: World | None = None,
    cached_mini_batch: int | None = None,
    loss: Any = None,
    first_callbacks: Sequence[Any] = (),
) -> TrainStats:
    """Train ``model`` in place; resume from a local or mirrored checkpoint when one exists (a checkpoint
    written with the plain loss resumes with its cached variant: ``cached_mini_batch``, see build_loss).

    ``loss``: a loss module instead of the spec's (a stage of its own, such as pre-training; plain batches);
    ``first_callbacks`` run before the checkpoint mirror (to add files to a checkpoint before it is mirrored).
    """
    from eft_trainer.hf_trainer import RowCountingTrainer, make_callbacks  # heavy: imports sentence_transformers

    precision, cuda = device_precision(spec)
    w = world or World()
    sampler = batch_sampler(spec, fmt, loss is not None, group_by_length)
    loss = loss if loss is not None else build_loss(model, spec, w.size, cached_mini_batch)
    out = work_dir / "checkpoints"
    out.mkdir(parents=True, exist_ok=True)
    resume, resumed_step = find_resume(out, storage, checkpoint_prefix, w)
    args = training_arguments(spec, out, precision, cuda, sampler, w, max_steps, num_workers)
    own = make_callbacks(storage, checkpoint_prefix, w)
    stopper = own[2]
    trainer = RowCountingTrainer(
        model=model, args=args, train_dataset=dataset, loss=loss, callbacks=[*first_callbacks, *own, *callbacks]
    )
    for cb in callbacks:  # the progress gauges' throughput counts the rows the loss saw (eft_trainer.metrics)
        if hasattr(cb, "rows_source"):
            cb.rows_source = lambda: trainer.rows_trained * w.size
    pad = CPU_BF16_PAD if precision == "bf16" and not cuda else None
    result, seconds = _fit(trainer, model, resume, pad, stopper.handler)
    samples = trainer.rows_trained * w.size  # every process trains as many full batches
    losses_seen = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return TrainStats(
        seconds=seconds,
        steps=int(trainer.state.global_step),
        samples=samples,
        samples_per_second=samples / seconds if seconds > 0 else 0.0,
        precision=precision,
        resumed_from_step=resumed_step,
        final_loss=float(losses_seen[-1]) if losses_seen else float(getattr(result, "training_loss", 0.0) or 0.0),
        interrupted=stopper.requested,
    )
