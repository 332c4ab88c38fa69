"""Out-of-memory recovery: an attempt that runs out of memory in training leaves a record; the next switches
an in-batch-negative loss to its cached variant with a smaller mini-batch (the same batch, so the same
in-batch negatives and the same result in expectation: GradCache).

A pod retried by the Job controller has the same template as the one that failed, so the trainer itself
carries what it learnt from one attempt to the next, in ``<run prefix>checkpoints/oom.json`` (beside the
mirrored checkpoints; a local file under the work folder when there is no S3):

* ``attempts``: how many attempts started training;
* ``inProgress``: the attempt training now (loss, batch, mini-batch); cleared whenever training ends in
  the process (done, an error, SIGTERM). An attempt that finds it set was preceded by one that vanished
  mid-training without a word: killed by the kernel for its cgroup memory limit (``OOMKilled``: nothing
  can be written then), or its node lost. It is counted as an out-of-memory failure (detected
  ``uncleanExit``): the cost of a wrong guess is the cached loss's extra forward pass, never another result;
* ``outOfMemory``: one record per attempt that ran out of memory (caught: CUDA ``OutOfMemoryError``, the
  CPU allocator's ``can't allocate memory``, ``MemoryError``), with the loss, batch, mini-batch and step.

:func:`plan` (pure) turns the spec's training and those records into the loss of the next attempt:
MultipleNegativesRanking -> CachedMultipleNegativesRanking and MultipleNegativesSymmetricRanking ->
CachedMultipleNegativesSymmetricRanking with a mini-batch of ``min(miniBatchSize, batchSize // 4)``,
halved at each further out-of-memory failure (a cached loss in the spec starts from half its own
``miniBatchSize``), down to :data:`MIN_MINI_BATCH`; below it there is nothing left to try. Other losses and
the ``queryAdapter`` method (which trains on cached embeddings) have no fallback; ``queryEncoder`` encodes its
queries in mini-batches with cached gradients (its documents are cached embeddings).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from eft_api.spec import Loss, Method, TrainingSpec
from eft_trainer.report import camel_keys

log = logging.getLogger(__name__)

MARKER = "oom.json"
#: What a person can do when the trainer has nothing smaller left to try (the one wording of the advice).
OOM_ADVICE = (
    "lower spec.training.batchSize or spec.model.maxSeqLength, use CachedMultipleNegativesRanking with a smaller "
    "spec.training.miniBatchSize, or raise spec.resources.memory (or use a GPU with more memory)"
)
#: The smallest mini-batch tried; an attempt that runs out of memory with it fails the run.
MIN_MINI_BATCH = 1
#: The cached variant of each loss that has one (sentence-transformers class names, less ``Loss``).
CACHED_VARIANT: dict[Loss, str] = {
    Loss.MULTIPLE_NEGATIVES_RANKING: "CachedMultipleNegativesRanking",
    Loss.CACHED_MULTIPLE_NEGATIVES_RANKING: "CachedMultipleNegativesRanking",
    Loss.MULTIPLE_NEGATIVES_SYMMETRIC_RANKING: "CachedMultipleNegativesSymmetricRanking",
}
EXCEPTION, UNCLEAN_EXIT = "exception", "uncleanExit"


@dataclass(frozen=True)
class Setup:
    """What an attempt trains with: the loss (a spec name or a cached variant's), the batch, the mini-batch."""

    loss: str
    batch_size: int
    mini_batch_size: int | None = None


@dataclass(frozen=True)
class OomRecord:
    """One attempt that ran out of memory in training."""

    attempt: int
    setup: Setup
    #: The optimizer step it had reached (None when it vanished: ``uncleanExit``).
    step: int | None
    detected: str
    error: str = ""


@dataclass
class Attempts:
    """The marker's content."""

    attempts: int = 0
    in_progress: Setup | None = None
    out_of_memory: list[OomRecord] = field(default_factory=list)

    def to_json(self) -> bytes:
        return json.dumps(camel_keys(asdict(self)), indent=2).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Attempts:
        d = json.loads(data)
        ip = d.get("inProgress")
        return cls(
            attempts=int(d.get("attempts", 0)),
            in_progress=_setup(ip) if ip else None,
            out_of_memory=[
                OomRecord(
                    attempt=int(r["attempt"]),
                    setup=_setup(r["setup"]),
                    step=r.get("step"),
                    detected=str(r.get("detected", EXCEPTION)),
                    error=str(r.get("error", "")),
                )
                for r in d.get("outOfMemory", [])
            ],
        )


def _setup(d: dict[str, Any]) -> Setup:
    mb = d.get("miniBatchSize")
    return Setup(str(d["loss"]), int(d["batchSize"]), None if mb is None else int(mb))


@dataclass(frozen=True)
class Plan:
    """The next attempt's setup; ``cached_mini_batch`` is set when it is a fallback (None: the spec's loss)."""

    setup: Setup
    cached_mini_batch: int | None = None

    @property
    def fallback(self) -> bool:
        return self.cached_mini_batch is not None


def spec_setup(training: TrainingSpec) -> Setup:
    cached = training.loss is Loss.CACHED_MULTIPLE_NEGATIVES_RANKING
    return Setup(training.loss.value, training.batch_size, training.mini_batch_size if cached else None)


def recoverable(training: TrainingSpec) -> bool:
    """Whether the spec's training has a smaller-memory variant (full fine-tuning or the query tower of
    queryEncoder, with an in-batch loss)."""
    return training.method in (Method.FULL, Method.QUERY_ENCODER) and training.loss in CACHED_VARIANT


def plan(training: TrainingSpec, ooms: Sequence[OomRecord]) -> Plan | None:
    """The setup after ``ooms`` out-of-memory failures; None when nothing smaller is left to try. Pure."""
    base = spec_setup(training)
    if not ooms:
        return Plan(base)
    if not recoverable(training):
        return None
    if training.loss is Loss.CACHED_MULTIPLE_NEGATIVES_RANKING:
        first = training.mini_batch_size // 2
    else:
        first = min(training.mini_batch_size, training.batch_size // 4)
    mini = first >> (len(ooms) - 1)
    if mini < MIN_MINI_BATCH:
        return None
    return Plan(Setup(CACHED_VARIANT[training.loss], training.batch_size, mini), mini)


def describe(s: Setup) -> str:
    mini = f", mini-batch {s.mini_batch_size}" if s.mini_batch_size is not None else ""
    return f"{s.loss} (batch {s.batch_size}{mini})"


def fallback_summary(training: TrainingSpec, p: Plan, attempt: int, ooms: Sequence[OomRecord]) -> dict[str, Any]:
    """The report's ``training.oomFallback``: what was switched, to what, in which attempt, and why. Pure."""
    return {
        "fromLoss": training.loss.value,
        "toLoss": p.setup.loss,
        "batchSize": p.setup.batch_size,
        "miniBatchSize": p.cached_mini_batch,
        "attempt": attempt,
        "outOfMemory": [camel_keys(asdict(r)) for r in ooms],
    }


# ---------------------------------------------------------------- detection


def is_oom(exc: BaseException) -> bool:
    """An allocation failure: CUDA's ``OutOfMemoryError``, the CPU allocator's ``can't allocate memory``
    (a RuntimeError, e.g. under a RLIMIT_AS), Python's ``MemoryError``."""
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except ImportError:
        pass
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        s in text for s in ("CUDA out of memory", "can't allocate memory", "Cannot allocate memory")
    )


# ---------------------------------------------------------------- the marker's I/O


class MarkerStore(Protocol):
    def read(self) -> bytes | None: ...

    def write(self, data: bytes) -> None: ...


class LocalMarker:
    """The marker as a plain file (tests)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> bytes | None:
        return self.path.read_bytes() if self.path.is_file() else None

    def write(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(data)


class S3Marker:
    """The marker in the run's store beside the mirrored checkpoints, so that the next pod of the Job finds it."""

    def __init__(self, storage: Any, uri: Any) -> None:
        self.storage, self.uri = storage, uri

    def read(self) -> bytes | None:
        if not self.storage.exists(self.uri):
            return None
        data: bytes = self.storage.get_bytes(self.uri)
        return data

    def write(self, data: bytes) -> None:
        self.storage.put_bytes(data, self.uri)


class Guard:
    """One attempt's view of the marker (the main process writes it; every process reads the same plan).

    :meth:`start` reads the marker (an ``inProgress`` left set counts as an out-of-memory failure), decides
    the plan, and records this attempt as in progress; :meth:`failed` records an out-of-memory failure and
    returns the next plan (None: nothing left); :meth:`ended` clears ``inProgress``."""

    def __init__(self, store: MarkerStore, training: TrainingSpec, main: bool = True) -> None:
        self.store, self.training, self.main = store, training, main
        self.state = Attempts()
        self.attempt = 0
        self.plan: Plan | None = None

    def _read(self) -> Attempts:
        try:
            data = self.store.read()
            return Attempts.from_json(data) if data else Attempts()
        except (ValueError, KeyError, TypeError):
            log.warning("ignored an unreadable out-of-memory marker")
            return Attempts()

    def _write(self) -> None:
        if self.main:
            self.store.write(self.state.to_json())

    def start(self) -> Plan | None:
        self.state = self._read()
        if self.state.in_progress is not None:
            lost = OomRecord(self.state.attempts, self.state.in_progress, None, UNCLEAN_EXIT)
            log.warning(
                "attempt %d ended without a word while training with %s: counted as out of memory "
                "(a kernel OOM kill leaves nothing else)",
                lost.attempt,
                describe(lost.setup),
            )
            self.state.out_of_memory.append(lost)
            self.state.in_progress = None
        self.plan = plan(self.training, self.state.out_of_memory)
        self.state.attempts += 1
        self.attempt = self.state.attempts
        if self.plan is None:
            self._write()
            return None
        if self.plan.fallback:
            log.warning(
                "attempt %d trains with %s after %d out-of-memory failure(s)",
                self.attempt,
                describe(self.plan.setup),
                len(self.state.out_of_memory),
            )
        self.state.in_progress = self.plan.setup
        self._write()
        return self.plan

    def failed(self, step: int | None, exc: BaseException) -> Plan | None:
        assert self.plan is not None
        record = OomRecord(self.attempt, self.plan.setup, step, EXCEPTION, f"{type(exc).__name__}: {str(exc)[:200]}")
        self.state.out_of_memory.append(record)
        self.state.in_progress = None
        self._write()
        return plan(self.training, self.state.out_of_memory)

    def ended(self) -> None:
        if self.state.in_progress is not None:
            self.state.in_progress = None
            self._write()

    def summary(self) -> dict[str, Any] | None:
        """The report's ``oomFallback`` of this attempt (None: it trains as the spec says)."""
        if self.plan is None or not self.plan.fallback:
            return None
        return fallback_summary(self.training, self.plan, self.attempt, self.state.out_of_memory)


def step_tracker() -> Any:
    """An HF Trainer callback that knows which optimizer step (1-based) is being trained."""
    from transformers import TrainerCallback

    class StepTracker(TrainerCallback):  # type: ignore[misc]
        step = 0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.step = int(state.global_step) + 1

    return StepTracker()
