"""What every stage of a run shares, and the bookkeeping of a stage (phase, progress gauge, timing)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eft_api.contract import TRAINER_PHASES, RunConfig
from eft_trainer.distributed import World
from eft_trainer.metrics import Progress
from eft_trainer.storage import Store, open_store

log = logging.getLogger("eft_trainer")


def timing_key(phase: str) -> str:
    """The report's timing key of a phase: ``evaluate-base`` -> ``evaluateBase``. Pure."""
    head, *rest = phase.split("-")
    return head + "".join(r.title() for r in rest)


@dataclass
class RunContext:
    """The run config, the store (S3, or a local folder in development), the run's work dir and
    this process's own folder in it, the processes of the run, the progress gauges, the HF Trainer callbacks
    and step limit, and the timings of the stages so far (the report's ``timings``)."""

    cfg: RunConfig
    storage: Store
    work: Path
    world: World
    progress: Progress
    callbacks: Sequence[Any] = ()
    max_steps: int = -1
    timings: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    @property
    def own(self) -> Path:
        return self.world.own(self.work)

    @contextlib.contextmanager
    def stage(self, phase: str, *, timed: bool = True) -> Iterator[float]:
        """Mark ``phase`` current (log line, progress gauge); on success record its seconds under its timing
        key (unless ``timed`` is False: a stage that records its own). Yields the stage's start time."""
        if phase not in TRAINER_PHASES:
            raise ValueError(f"unknown phase {phase!r}: add it to eft_api.contract.TRAINER_PHASES")
        self.progress.set_phase(phase)
        log.info("phase %s started", phase)
        t0 = time.perf_counter()
        yield t0
        if timed:
            self.timings[timing_key(phase)] = time.perf_counter() - t0

    @contextlib.contextmanager
    def timed(self, key: str) -> Iterator[None]:
        """Time a step that is not a phase of its own (loading the model)."""
        t0 = time.perf_counter()
        yield
        self.timings[key] = time.perf_counter() - t0


def open_storage(cfg: RunConfig, env: Mapping[str, str]) -> Store:
    """The run's store, chosen once (:func:`eft_trainer.storage.open_store`): S3 from ``spec.storage``, or the
    folder ``$EFT_DATA_ROOT`` in development."""
    return open_store(cfg.spec.storage, env)


def start(
    cfg: RunConfig,
    storage: Store,
    *,
    callbacks: Sequence[Any] = (),
    max_steps: int = -1,
    progress: Progress | None = None,
    world: World | None = None,
) -> RunContext:
    """The context of a run: its work dir (``<settings.workDir>/<run id>``) made, progress gauges if none."""
    work = Path(cfg.settings.work_dir) / cfg.run.run_id
    work.mkdir(parents=True, exist_ok=True)
    return RunContext(cfg, storage, work, world or World(), progress or Progress(0), callbacks, max_steps)
