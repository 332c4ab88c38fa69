"""The resource's status, typed: :class:`EmbeddingFinetuneStatus` and its parts, in one place.

The operator builds status through these models (conditions, runs, results, artifacts, trainerStatus); the CLI
and the tests read it back through them; ``tests/api/test_status_model.py`` holds them to the CRD's status
schema field by field, both ways.

``status.trainerStatus`` (a run's progress) has the shape of Kubeflow Trainer's ``trainerStatus`` (``progressPercentage``, ``estimatedRemainingSeconds``,
``metrics`` as ``{name, value}`` with string values, ``lastUpdatedTime``) plus ``phase``. The operator
writes it through :class:`TrainerStatus`; the CLI and the tests read it back through the same model. The
CRD's ``status.trainerStatus`` schema describes the same fields (``tests/api/test_status_model.py``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from eft_api.contract import Artifacts, BaselineFigures, GenerationSummary, GuardFigures, OomFallback

#: The longest ``status.trainerStatus.phase`` (a longer trainer phase label is clipped to it).
PHASE_MAX_LENGTH = 64


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    def to_status(self) -> dict[str, Any]:
        """The JSON block as it goes into the resource's status (camelCase, unset fields left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


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

    @classmethod
    def of(cls, status: Any) -> TrainerStatus | None:
        """Read ``status.trainerStatus`` from a resource's status (None when absent)."""
        block = (status or {}).get("trainerStatus") if isinstance(status, dict) else None
        return cls.model_validate(block) if isinstance(block, dict) else None

    def metric(self, name: str) -> str | None:
        return next((m.value for m in self.metrics or [] if m.name == name), None)


class Condition(_Model):
    """A condition, as in the Kubernetes API conventions (``Ready``, ``Reconciling``, ``Stalled``)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None
    observed_generation: int | None = None


class _Run(_Model):
    """What every run has: its identity (id, generation, Job, publication prefix, start) and its phase."""

    model_config = ConfigDict(extra="ignore")

    id: str
    generation: int
    job_name: str | None = None
    output_uri: str | None = None
    phase: str | None = None
    reason: str | None = None
    message: str | None = None
    start_time: str | None = None
    completion_time: str | None = None
    #: The hash of the spec's training-relevant fields (eft_api.relevance): equal digests train equal models.
    training_digest: str | None = None
    #: The run whose trained model this run re-measured and re-gated without training.
    reused_model_from: str | None = None
    #: Why the run ran (spec.retrain): specChange, schedule, dataChange or manual, and what made it unique.
    trigger: str | None = None
    trigger_key: str | None = None
    #: The digest of the data listing the run was started for (spec.retrain.onDataChange).
    data_digest: str | None = None


class CurrentRun(_Run):
    """``status.currentRun``: the run of the latest generation, with the hash of the spec it trains."""

    spec_hash: str | None = None


class RunRecord(_Run):
    """An entry of ``status.runs``: a finished run and the trainer's summary of it."""

    primary_metric: str | None = None
    dimension: int | None = None
    base: float | None = None
    finetuned: float | None = None
    gain: float | None = None
    artifacts: Artifacts | None = None
    generated_data: GenerationSummary | None = None
    guards: list[GuardFigures] | None = None
    oom_fallback: OomFallback | None = None
    baselines: list[BaselineFigures] | None = None
    merge_ratio: float | None = None
    #: The model registry version the run was registered as (spec.output.registry).
    registered_version: str | None = None


class Results(_Model):
    """The headline of the latest successful run: base vs fine-tuned, at one dimension."""

    run_id: str
    primary_metric: str
    dimension: int
    base: float
    finetuned: float
    gain: float
    reindex_required: bool | None = None
    baselines: list[BaselineFigures] | None = None
    merge_ratio: float | None = None
    reused_model_from: str | None = None
    registered_version: str | None = None


class RetrainStatus(_Model):
    """``status.retrain``: what spec.retrain triggered and when it looks next."""

    model_config = ConfigDict(extra="ignore")

    last_trigger: str | None = None
    last_trigger_time: str | None = None
    last_schedule_time: str | None = None
    next_schedule_time: str | None = None
    last_manual: str | None = None
    skipped: int | None = None
    last_check_time: str | None = None
    last_data_digest: str | None = None
    baseline_digest: str | None = None
    probe: dict[str, Any] | None = None


class EmbeddingFinetuneStatus(_Model):
    """``.status`` of an EmbeddingFinetune, as the operator writes it (fields it does not know are ignored)."""

    model_config = ConfigDict(extra="ignore")

    observed_generation: int | None = None
    conditions: list[Condition] | None = None
    current_run: CurrentRun | None = None
    runs: list[RunRecord] | None = None
    results: Results | None = None
    artifacts: Artifacts | None = None
    trainer_status: TrainerStatus | None = None
    retrain: RetrainStatus | None = None
    pending_notifications: list[dict[str, Any]] | None = None

    @classmethod
    def of(cls, status: Any) -> EmbeddingFinetuneStatus:
        """Read a resource's ``.status`` (empty when absent)."""
        return cls.model_validate(status if isinstance(status, dict) else {})

    def condition(self, ctype: str) -> Condition | None:
        return next((c for c in self.conditions or [] if c.type == ctype), None)
