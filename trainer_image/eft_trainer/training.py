"""Fine-tune with ``SentenceTransformerTrainer``: loss (+ Matryoshka), sampler, precision, seed, checkpoints.

Checkpoints go to ``<workDir>/checkpoints/checkpoint-<step>`` and are mirrored to
``<run prefix>/checkpoints/checkpoint-<step>/`` with ``checkpoints/latest.json`` written last, so a retried
pod resumes from the last mirrored checkpoint instead of starting over.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from eft_api.spec import (
    IN_BATCH_NEGATIVE_LOSSES,
    DataFormat,
    EmbeddingFinetuneSpec,
    Loss,
    TrainingSpec,
)
from eft_trainer import distributed as dist
from eft_trainer.distributed import World
from eft_trainer.errors import InvalidSpecError
from eft_trainer.storage import S3Uri, Storage

log = logging.getLogger(__name__)

LATEST = "latest.json"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


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


def check_dimensions(spec: EmbeddingFinetuneSpec, full_dim: int, model_name: str) -> None:
    """Matryoshka and gate dimensions must fit the model's embedding size (known only once it is loaded)."""
    too_big = [d for d in spec.training.matryoshka_dims if d > full_dim]
    if too_big:
        raise InvalidSpecError(
            f"spec.training.matryoshkaDims: {too_big} larger than the {full_dim} dims of {model_name}; "
            f"start the list at {full_dim} or below"
        )
    gate = spec.evaluation.gate
    if gate is not None and gate.dimension is not None and gate.dimension > full_dim:
        raise InvalidSpecError(
            f"spec.evaluation.gate.dimension: {gate.dimension} is larger than the {full_dim} dims of {model_name}"
        )


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
    from sentence_transformers.sentence_transformer import losses

    from eft_trainer.oom import CACHED_VARIANT

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


# ---------------------------------------------------------------- batching


def group_batches(
    texts: Sequence[tuple[str, ...]], batch_size: int, order: Sequence[int], mega: int = 8, drop_last: bool = False
) -> list[list[int]]:
    """Batches with no repeated text (so in-batch negatives are real negatives), of similar lengths.

    ``order`` (a random permutation) is cut into mega-batches of ``mega * batch_size``; each is sorted by
    total text length, so a batch pads to a similar length (less wasted compute), then filled greedily
    skipping rows whose text is already in the batch (they move on to the next mega-batch). Pure.
    """
    lengths = [sum(len(t) for t in row) for row in texts]
    batches: list[list[int]] = []
    carry: list[int] = []
    step = batch_size * mega
    for start in range(0, len(order), step):
        chunk = sorted([*carry, *order[start : start + step]], key=lambda i: lengths[i])
        carry = []
        batch: list[int] = []
        seen: set[str] = set()
        for i in chunk:
            if any(t in seen for t in texts[i]):
                carry.append(i)
                continue
            batch.append(i)
            seen.update(texts[i])
            if len(batch) == batch_size:
                batches.append(batch)
                batch, seen = [], set()
        carry = batch + carry
    # The tail: pack what is left; a row whose text repeats in every open batch is left out of this epoch.
    while carry:
        batch, seen, rest = [], set(), []
        for i in carry:
            if len(batch) < batch_size and not any(t in seen for t in texts[i]):
                batch.append(i)
                seen.update(texts[i])
            else:
                rest.append(i)
        if len(batch) == batch_size or not drop_last:
            batches.append(batch)
        if len(rest) == len(carry):
            break
        carry = rest
    return batches


def split_to(batches: Sequence[list[int]], count: int) -> list[list[int]]:
    """``batches`` with the largest halved until there are ``count`` (a part of a batch repeats no text). Pure."""
    out = [list(b) for b in batches]
    while len(out) < count:
        i = max(range(len(out)), key=lambda j: len(out[j]))
        if len(out[i]) < 2:
            break
        half = len(out[i]) // 2
        out[i : i + 1] = [out[i][:half], out[i][half:]]
    return out


def fit_epoch(candidates: Iterable[list[list[int]]], count: int, full: bool = False) -> list[list[int]]:
    """The first candidate batching with at most ``count`` batches, split up to exactly ``count``; else the
    candidate with the fewest (its surplus batches would go untrained: logged). Pure but for the log line.

    ``full``: every batch must keep its size (several processes gather equal-sized batches), so nothing is
    split: the first candidate with at least ``count`` batches is cut to ``count``; else the one with the
    most, its first batches repeated up to ``count``."""
    if full:
        most: list[list[int]] = []
        for batches in candidates:
            if len(batches) >= count:
                return batches[:count]
            most = max(most, batches, key=len)
        return [most[i % len(most)] for i in range(count)] if most else most
    best: list[list[int]] | None = None
    for batches in candidates:
        if len(batches) <= count:
            return split_to(batches, count)
        if best is None or len(batches) < len(best):
            best = batches
    assert best is not None
    log.warning("no batching of this epoch fits in %d batches; the last %d are not trained", count, len(best) - count)
    return best


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


# ---------------------------------------------------------------- checkpoints


def local_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint in ``folder`` (one with trainer_state.json), if any."""
    best: tuple[int, Path] | None = None
    if folder.is_dir():
        for p in folder.iterdir():
            m = _CKPT.match(p.name)
            if m and (p / "trainer_state.json").is_file() and (best is None or int(m.group(1)) > best[0]):
                best = (int(m.group(1)), p)
    return best[1] if best else None


def fetch_checkpoint(storage: Storage, prefix: S3Uri, folder: Path) -> Path | None:
    """Download the last mirrored checkpoint (named by checkpoints/latest.json), if one exists."""
    marker = prefix.join(LATEST)
    if not storage.exists(marker):
        return None
    name = str(json.loads(storage.get_bytes(marker))["checkpoint"])
    dest = folder / name
    if dest.exists():
        shutil.rmtree(dest)
    storage.download_tree(prefix.join(name + "/"), dest, allow_object=False)
    log.info("fetched checkpoint %s from %s", name, prefix)
    return dest


def mirror_checkpoint(storage: Storage, ckpt: Path, prefix: S3Uri) -> None:
    for f in sorted(p for p in ckpt.rglob("*") if p.is_file()):
        storage.upload(f, prefix.join(f"{ckpt.name}/{f.relative_to(ckpt).as_posix()}"))
    storage.put_bytes(json.dumps({"checkpoint": ckpt.name}).encode(), prefix.join(LATEST))
    log.info("mirrored %s to %s", ckpt.name, prefix)


def make_callbacks(storage: Storage | None, prefix: S3Uri | None, world: World | None = None) -> list[Any]:
    from transformers import TrainerCallback

    w = world or World()

    class MirrorCheckpoints(TrainerCallback):  # type: ignore[misc]
        """Rank 0 mirrors each checkpoint once every rank has written its part (its RNG state) of it."""

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if storage is None or prefix is None:
                return
            dist.barrier()
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if w.main and ckpt.is_dir():
                mirror_checkpoint(storage, ckpt, prefix)

    class NoFinalCheckpoint(TrainerCallback):  # type: ignore[misc]
        """Skip the end-of-training checkpoint: the model is evaluated and published right after, and a pod
        that dies before publishing resumes from the last periodic checkpoint (at most checkpointSteps back).
        Saves the time of writing (and mirroring) the weights and optimizer state once more."""

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step >= state.max_steps and state.global_step % max(1, int(args.save_steps)) != 0:
                control.should_save = False

    class StopOnSigterm(TrainerCallback):  # type: ignore[misc]
        """On SIGTERM: save (and so mirror) a checkpoint at the end of the current step, then stop."""

        def __init__(self) -> None:
            self.requested = False

        def handler(self, signum: int, frame: FrameType | None) -> None:
            log.warning("received SIGTERM: saving a checkpoint at the end of this step and stopping")
            self.requested = True

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            # Every rank stops at the same step (a rank that went on alone would wait for the others forever).
            if w.distributed:
                self.requested = dist.any_rank(self.requested)
            if self.requested:
                control.should_save = True
                control.should_training_stop = True

    # Order matters: a SIGTERM's save request overrides NoFinalCheckpoint.
    return [MirrorCheckpoints(), NoFinalCheckpoint(), StopOnSigterm()]


def batch_rows(inputs: dict[str, Any]) -> int:
    """The number of rows in a collated batch: the first dimension of its first tensor. Pure."""
    for value in inputs.values():
        shape = getattr(value, "shape", None)
        if shape is not None and len(shape) >= 1:
            return int(shape[0])
    return 0


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


def train(
    model: Any,
    dataset: Any,
    spec: TrainingSpec,
    fmt: DataFormat,
    work_dir: Path,
    *,
    storage: Storage | None = None,
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
    import torch
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    cuda = torch.cuda.is_available()
    cpuinfo = Path("/proc/cpuinfo")
    cpu_bf16 = not cuda and cpuinfo.is_file() and cpu_has_bf16(cpuinfo.read_text())
    precision = pick_precision(spec.precision, cuda, cuda and torch.cuda.is_bf16_supported(), cpu_bf16)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    w = world or World()
    sampler: Any
    if loss is not None:
        sampler = BatchSamplers.BATCH_SAMPLER
    elif spec.loss in IN_BATCH_NEGATIVE_LOSSES:
        from eft_trainer.sampler import LengthGroupedNoDuplicatesBatchSampler

        sampler = LengthGroupedNoDuplicatesBatchSampler if group_by_length else BatchSamplers.NO_DUPLICATES
    elif fmt is DataFormat.LABELED_TEXTS and spec.loss is not Loss.MSE:  # MSE's labels are teacher embeddings
        sampler = BatchSamplers.GROUP_BY_LABEL
    else:
        sampler = BatchSamplers.BATCH_SAMPLER
    loss = loss if loss is not None else build_loss(model, spec, w.size, cached_mini_batch)
    out = work_dir / "checkpoints"
    out.mkdir(parents=True, exist_ok=True)
    # The first process of each node (pod) fetches the mirrored checkpoint for the processes of its node.
    resume = local_checkpoint(out)
    if resume is None and w.local_main and storage is not None and checkpoint_prefix is not None:
        resume = fetch_checkpoint(storage, checkpoint_prefix, out)
    if w.distributed:
        dist.barrier()
        resume = local_checkpoint(out)
    resumed_step = 0
    if resume is not None:
        resumed_step = int(json.loads((resume / "trainer_state.json").read_text())["global_step"])
        log.info("resuming from %s (step %d)", resume.name, resumed_step)
    args = SentenceTransformerTrainingArguments(
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
        dataloader_num_workers=num_workers,
        dataloader_pin_memory=cuda,
        disable_tqdm=not sys.stderr.isatty(),
        ddp_timeout=int(os.environ.get(dist.TIMEOUT_ENV, dist.DEFAULT_TIMEOUT)),
        # Several processes on CPU: transformers runs DDP over gloo only when told (else each process would
        # train every batch alone).
        # bf16 on CPU too: transformers refuses bf16 without a GPU unless told it trains on CPU.
        use_cpu=(w.distributed or precision == "bf16") and not cuda,
        ddp_backend="gloo" if w.distributed and not cuda else None,
    )
    stopper = None
    own = make_callbacks(storage, checkpoint_prefix, w)
    stopper = own[2]

    class Trainer(SentenceTransformerTrainer):  # type: ignore[misc]
        #: Rows the loss has seen in this process (the throughput's numerator; a short tail batch counts short).
        rows_trained = 0

        def add_model_card_callback(self, default_args_dict: dict[str, Any]) -> None:
            # The published model card is ours (publish.model_card): skip the stock card's data collection.
            return None

        def compute_loss(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            if model.training:
                self.rows_trained += batch_rows(inputs)
            return super().compute_loss(model, inputs, *args, **kwargs)

    trainer = Trainer(
        model=model, args=args, train_dataset=dataset, loss=loss, callbacks=[*first_callbacks, *own, *callbacks]
    )
    for cb in callbacks:  # the progress gauges' throughput counts the rows the loss saw (eft_trainer.metrics)
        if hasattr(cb, "rows_source"):
            cb.rows_source = lambda: trainer.rows_trained * w.size
    t0 = time.perf_counter()
    previous: Any = None
    with contextlib.suppress(ValueError):  # only the main thread can take signals
        previous = signal.signal(signal.SIGTERM, stopper.handler)
    try:
        with padded_to_multiple(model, CPU_BF16_PAD if precision == "bf16" and not cuda else None):
            result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    seconds = time.perf_counter() - t0
    steps = int(trainer.state.global_step)
    samples = trainer.rows_trained * w.size  # every process trains as many full batches
    losses_seen = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return TrainStats(
        seconds=seconds,
        steps=steps,
        samples=samples,
        samples_per_second=samples / seconds if seconds > 0 else 0.0,
        precision=precision,
        resumed_from_step=resumed_step,
        final_loss=float(losses_seen[-1]) if losses_seen else float(getattr(result, "training_loss", 0.0) or 0.0),
        interrupted=bool(getattr(stopper, "requested", False)),
    )
