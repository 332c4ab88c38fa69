"""Typed parts of the resource's status that others read: ``status.trainerStatus`` (a run's progress).

Its shape is Kubeflow Trainer's ``trainerStatus`` (``progressPercentage``, ``estimatedRemainingSeconds``,
``metrics`` as ``{name, value}`` with string values, ``lastUpdatedTime``) plus ``phase``. The operator
writes it through :class:`TrainerStatus`; the CLI and the tests read it back through the same model. The
CRD's ``status.trainerStatus`` schema describes the same fields (``tests/api/test_status_model.py``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

#: The longest ``status.trainerStatus.phase`` (a longer trainer phase label is clipped to it).
PHASE_MAX_LENGTH = 64


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Metric(_Model):
    """One training metric, its value as a string (as in Kubeflow Trainer)."""

    name: Annotated[str, Field(min_length=1, max_length=64, description="The metric, e.g. loss.")]
    value: Annotated[str, Field(min_length=1, max_length=64, description="Its latest value, as text.")]


class TrainerStatus(_Model):
    """A run's progress as its trainer last reported it."""

    phase: Annotated[
        str | None,
        Field(
            default=None,
            max_length=PHASE_MAX_LENGTH,
            description="Loading, Generating, EvaluatingBase, Mining, Pretraining, Training, Evaluating, "
            "Publishing, Done or Failed (a trainer phase the operator does not know, in CamelCase).",
        ),
    ]
    progress_percentage: Annotated[
        int | None,
        Field(
            default=None,
            ge=0,
            le=100,
            description="How far the run is, 0-100 (each phase starts at a fixed share; training moves by step / maxSteps).",
        ),
    ]
    estimated_remaining_seconds: Annotated[
        int | None,
        Field(
            default=None,
            ge=0,
            description="The trainer's estimate of the training time left (while it trains; 0 when done).",
        ),
    ]
    metrics: Annotated[
        list[Metric] | None,
        Field(
            default=None,
            max_length=16,
            description="Latest loss, samplesPerSecond (rows trained per second), step, maxSteps and epoch.",
        ),
    ]
    last_updated_time: Annotated[
        str | None, Field(default=None, description="When the operator last read a change from the trainer.")
    ]

    def to_status(self) -> dict[str, Any]:
        """The JSON block as it goes into ``status.trainerStatus``."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @classmethod
    def of(cls, status: Any) -> TrainerStatus | None:
        """Read ``status.trainerStatus`` from a resource's status (None when absent)."""
        block = (status or {}).get("trainerStatus") if isinstance(status, dict) else None
        return cls.model_validate(block) if isinstance(block, dict) else None

    def metric(self, name: str) -> str | None:
        return next((m.value for m in self.metrics or [] if m.name == name), None)
