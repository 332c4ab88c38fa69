"""Run progress: from the trainer's Prometheus gauges to ``status.trainerStatus``. Pure (no I/O, ``now`` passed in).

The operator reads the running trainer pod's ``metrics`` port (``eft_trainer_*`` gauges, see
``eft_trainer.metrics``) and writes what it read in the shape of Kubeflow Trainer's ``trainerStatus``:
``progressPercentage``, ``estimatedRemainingSeconds``, ``metrics`` (a list of ``{name, value}`` with values
as strings) and ``lastUpdatedTime``, plus the run's ``phase``.

* :func:`parse_metrics` turns the exposition text into a :class:`Sample`.
* :func:`progress_percentage` is the one place where phases weigh: each phase starts at a fixed percentage
  (:data:`PHASE_START`) and training moves from its start to the next phase's by ``step / max_steps``. A
  phase it does not know keeps the previous percentage.
* :func:`trainer_status` builds the status block; :func:`same_progress` says whether two blocks differ in
  more than their time (the operator patches only then); :func:`finished` is the block of a run that ended.
* :func:`metrics_url` finds where a run's trainer serves its gauges.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eft_api import contract
from eft_api.status import PHASE_MAX_LENGTH, TrainerStatus

#: Percentage at which each trainer phase starts, in run order (optional phases included: generate
#: (documents), mine (hard negatives), label (cross-encoder scores), pretrain, evaluate-teacher (distillation)). Training fills the span up to the phase after it.
PHASE_START: dict[str, int] = {
    "fetch": 0,
    "generate": 2,
    "check": 10,
    "evaluate-base": 12,
    "mine": 16,
    "label": 18,
    "pretrain": 20,
    "train": 25,
    "evaluate-finetuned": 90,
    "evaluate-teacher": 94,
    "publish": 96,
    "done": 100,
}
TRAIN_END = PHASE_START["evaluate-finetuned"]
#: How ``status.trainerStatus.phase`` names each trainer phase (the issue's words, CamelCase).
PHASE_NAMES: dict[str, str] = {
    "fetch": "Loading",
    "generate": "Generating",
    "check": "Loading",
    "evaluate-base": "EvaluatingBase",
    "mine": "Mining",
    "label": "Labelling",
    "pretrain": "Pretraining",
    "train": "Training",
    "evaluate-finetuned": "Evaluating",
    "evaluate-teacher": "EvaluatingTeacher",
    "publish": "Publishing",
    "done": "Done",
    "failed": "Failed",
}
DONE = "Done"

_GAUGES = {
    "eft_trainer_step": "step",
    "eft_trainer_max_steps": "max_steps",
    "eft_trainer_epoch": "epoch",
    "eft_trainer_loss": "loss",
    "eft_trainer_samples_per_second": "samples_per_second",
    "eft_trainer_eta_seconds": "eta_seconds",
}


@dataclass(frozen=True)
class Sample:
    """What one read of the trainer's gauges said (None: the gauge was absent or not a number)."""

    phase: str | None = None
    step: float | None = None
    max_steps: float | None = None
    epoch: float | None = None
    loss: float | None = None
    samples_per_second: float | None = None
    eta_seconds: float | None = None


_WANTED = frozenset({*_GAUGES, "eft_trainer_phase_info"})
_NAME = re.compile(r"^(?:# (?:HELP|TYPE) )?([A-Za-z_:][A-Za-z0-9_:]*)")


def _wanted(line: str) -> bool:
    match = _NAME.match(line)
    return match is None or match.group(1) in _WANTED


def parse_metrics(text: str) -> Sample:
    """The trainer's gauges from Prometheus exposition text; ValueError when it is not that format.

    Only the families read here are parsed (the evaluation series, most of the text, are skipped).
    """
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    phase: str | None = None
    wanted = "\n".join(line for line in text.splitlines() if _wanted(line))
    for family in text_string_to_metric_families(wanted + "\n" if wanted else ""):
        for s in family.samples:
            if s.name == "eft_trainer_phase_info" and s.value == 1 and phase is None:
                phase = str(s.labels.get("phase") or "") or None
            elif s.name in _GAUGES and math.isfinite(s.value):
                values[_GAUGES[s.name]] = float(s.value)
    return Sample(phase=phase, **values)


def phase_name(phase: str) -> str:
    """``evaluate-base`` -> ``EvaluatingBase``; a phase not in :data:`PHASE_NAMES` in CamelCase as it is,
    clipped to what ``status.trainerStatus.phase`` holds."""
    known = PHASE_NAMES.get(phase)
    if known is not None:
        return known
    name = "".join(w[:1].upper() + w[1:] for w in re.split(r"[^A-Za-z0-9]+", phase) if w) or "Unknown"
    return name[:PHASE_MAX_LENGTH]


def progress_percentage(
    phase: str | None, step: float | None = None, max_steps: float | None = None, previous: int | None = None
) -> int | None:
    """The run's percentage (0-100) in ``phase``; ``previous`` for a phase without a weight (or None).

    In ``train`` it moves from the phase's start to :data:`TRAIN_END` by ``step / max_steps`` (rounded
    down, so 100 only when done).
    """
    if phase is None or phase not in PHASE_START:
        return previous
    start = PHASE_START[phase]
    if phase == "train" and step is not None and max_steps:
        fraction = min(max(step / max_steps, 0.0), 1.0)
        return min(TRAIN_END, start + int(fraction * (TRAIN_END - start)))
    return start


def _number(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def trainer_status(sample: Sample, now: str, previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``status.trainerStatus`` from a sample; ``previous`` (the block last written) fills what it lacks.

    ``estimatedRemainingSeconds`` is the trainer's estimate of training left, shown while it trains.
    ``metrics``: loss, samplesPerSecond, step, maxSteps, epoch, once training has begun (``max_steps`` set),
    each when the trainer has a value (it serves NaN for a loss not logged yet).
    """
    previous = previous or {}
    out: dict[str, Any] = {}
    phase = sample.phase
    if phase is not None:
        out["phase"] = phase_name(phase)
    elif previous.get("phase"):
        out["phase"] = previous["phase"]
    prev_pct = previous.get("progressPercentage")
    pct = progress_percentage(phase, sample.step, sample.max_steps, prev_pct if isinstance(prev_pct, int) else None)
    if pct is not None:
        out["progressPercentage"] = pct
    if phase == "train" and sample.eta_seconds is not None and sample.eta_seconds >= 0:
        out["estimatedRemainingSeconds"] = math.ceil(sample.eta_seconds)
    elif phase == "done":
        out["estimatedRemainingSeconds"] = 0
    metrics = [
        {"name": name, "value": _number(value)}
        for name, value in (
            ("loss", sample.loss),
            ("samplesPerSecond", sample.samples_per_second),
            ("step", sample.step),
            ("maxSteps", sample.max_steps),
            ("epoch", sample.epoch),
        )
        if value is not None and sample.max_steps  # all zero until training begins: nothing to say yet
    ]
    if metrics:
        out["metrics"] = metrics
    out["lastUpdatedTime"] = now
    return TrainerStatus.model_validate(out).to_status()


def same_progress(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Whether two trainerStatus blocks say the same, their time apart."""

    def strip(x: Mapping[str, Any] | None) -> dict[str, Any]:
        return {k: v for k, v in (x or {}).items() if k != "lastUpdatedTime"}

    return strip(a) == strip(b)


def finished(previous: Mapping[str, Any] | None, succeeded: bool, now: str) -> dict[str, Any] | None:
    """The trainerStatus of a run that ended: 100 and Done on success; the last value kept on failure.

    None when there is nothing to write (a failed run that never reported progress).
    """
    if not succeeded:
        return dict(previous) if previous else None
    done = {k: v for k, v in (previous or {}).items() if k != "lastUpdatedTime"}
    done.update(phase=DONE, progressPercentage=100, estimatedRemainingSeconds=0)
    if same_progress(done, previous):
        return dict(previous or {})
    done["lastUpdatedTime"] = now
    return done


def _container_port(pod: Mapping[str, Any], name: str) -> int | None:
    for c in (pod.get("spec") or {}).get("containers") or []:
        if c.get("name") != contract.TRAINER_CONTAINER:
            continue
        for p in c.get("ports") or []:
            if p.get("name") == name and isinstance(p.get("containerPort"), int):
                return int(p["containerPort"])
    return None


def _running(pod: Mapping[str, Any]) -> bool:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == contract.TRAINER_CONTAINER and "running" in (cs.get("state") or {}):
            return True
    return False


def metrics_url(pods: Sequence[Mapping[str, Any]]) -> str | None:
    """``http://<podIP>:<port named metrics>/metrics`` of the run's running trainer, or None.

    A multi-node run's pods all train; the first node's pod (completion index 0) serves the run's gauges.
    """

    def rank(pod: Mapping[str, Any]) -> tuple[int, str]:
        ann = (pod.get("metadata") or {}).get("annotations") or {}
        index = str(ann.get(contract.COMPLETION_INDEX_LABEL) or "0")
        return (int(index) if index.isdigit() else 0, str((pod.get("metadata") or {}).get("name") or ""))

    for pod in sorted(pods, key=rank):
        if (pod.get("metadata") or {}).get("deletionTimestamp") or not _running(pod):
            continue
        ip = (pod.get("status") or {}).get("podIP")
        port = _container_port(pod, "metrics")
        if ip and port:
            host = f"[{ip}]" if ":" in str(ip) else str(ip)
            return f"http://{host}:{port}/metrics"
    return None
