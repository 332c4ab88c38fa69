"""The contracts between the parts (DESIGN.md section 2), as typed, pure Python.

* Seam 2, operator -> trainer: :class:`RunConfig`, one JSON document mounted from a ConfigMap
  (``RUN_CONFIG_KEY`` in the ConfigMap, read from ``EFT_RUN_CONFIG`` in the pod). Never a credential.
* Seam 3, trainer -> storage: the publication layout under :func:`output_prefix` (``PUBLISHED_*``).
* Seam 4, trainer -> operator: :class:`ExitCode` and :class:`TerminationMessage` (at most 4 KB of JSON,
  written to ``/dev/termination-log``).
* Naming: :func:`run_id` and :func:`child_name` are deterministic, so that a restarted operator finds the
  children it made before instead of making a second set.
"""

from __future__ import annotations

import hashlib
import json
from enum import IntEnum, StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from eft_api.retrain import RunTrigger, run_salt
from eft_api.spec import API_GROUP, EmbeddingFinetuneSpec

RUN_CONFIG_KEY = "run-config.json"
RUN_CONFIG_ENV = "EFT_RUN_CONFIG"
#: The llm generator's API key (from spec.data.generate.generator.llm.apiKeySecret, by secretKeyRef).
LLM_API_KEY_ENV = "EFT_LLM_API_KEY"
#: The llm generator's prompt (from spec.data.generate.generator.llm.promptConfigMap, by configMapKeyRef).
LLM_PROMPT_ENV = "EFT_LLM_PROMPT"


def baseline_key_env(index: int) -> str:
    """The API key of ``spec.evaluation.baselines[index].endpoint`` (its apiKeySecret, by secretKeyRef)."""
    return f"EFT_BASELINE_{index}_API_KEY"


TERMINATION_LOG = "/dev/termination-log"
TERMINATION_MESSAGE_LIMIT = 4096

PUBLISHED_MODEL_DIR = "model/"
PUBLISHED_REPORT_JSON = "report.json"
PUBLISHED_REPORT_MD = "report.md"
PUBLISHED_PLOT = "dimensions.png"
PUBLISHED_MANIFEST = "manifest.json"
PUBLISHED_ADAPTER_DIR = "adapter/"
CHECKPOINTS_DIR = "checkpoints/"

#: Labels put on every child, for selection (where the API honours selectors) and for humans.
LABEL_NAME = f"{API_GROUP}/name"
LABEL_RUN = f"{API_GROUP}/run-id"
LABEL_GENERATION = f"{API_GROUP}/generation"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "eft-operator"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

#: The trainer container's name in the Job's pod template.
TRAINER_CONTAINER = "trainer"


class ExitCode(IntEnum):
    """The trainer's exit codes: each class of outcome has its own, and the Job's podFailurePolicy uses them."""

    SUCCEEDED = 0
    #: Unexpected crash: the Job may retry (up to backoffLimit).
    CRASHED = 1
    #: The input is wrong (spec, corpus, model id, credentials, bucket or key): retrying cannot help.
    BAD_INPUT = 2
    #: The run finished but the promotion gate rejected the fine-tuned model: retrying cannot help.
    PROMOTION_REJECTED = 3
    #: Out of (GPU) memory with this configuration: retrying the same configuration cannot help.
    OUT_OF_MEMORY = 4
    #: Out of memory in training, and the trainer recorded a setup that needs less memory for the next
    #: attempt (eft_trainer.oom): the Job retries (up to backoffLimit).
    OUT_OF_MEMORY_FALLBACK = 5
    #: Infrastructure trouble that may pass (S3 unreachable or throttling): worth retrying.
    RETRYABLE = 75


#: Exit codes on which the Job fails at once instead of retrying (used by the podFailurePolicy).
NON_RETRYABLE_EXIT_CODES = (ExitCode.BAD_INPUT, ExitCode.PROMOTION_REJECTED, ExitCode.OUT_OF_MEMORY)


class Reason(StrEnum):
    """CamelCase reasons shared by the trainer's termination message and the operator's conditions."""

    SUCCEEDED = "Succeeded"
    INVALID_SPEC = "InvalidSpec"
    INVALID_CORPUS = "InvalidCorpus"
    LOSS_FORMAT_MISMATCH = "LossFormatMismatch"
    MODEL_NOT_FOUND = "ModelNotFound"
    S3_UNAVAILABLE = "S3Unavailable"
    S3_ACCESS_DENIED = "S3AccessDenied"
    S3_NOT_FOUND = "S3NotFound"
    OOM = "OOMKilled"
    PROMOTION_REJECTED = "PromotionRejected"
    GENERATION_FAILED = "GenerationFailed"
    GENERATOR_MISCONFIGURED = "GeneratorMisconfigured"
    REGISTRY_FAILED = "RegistryFailed"
    CRASHED = "TrainerCrashed"


#: The exit code of each trainer failure reason.
EXIT_CODE_OF_REASON: dict[Reason, ExitCode] = {
    Reason.SUCCEEDED: ExitCode.SUCCEEDED,
    Reason.INVALID_SPEC: ExitCode.BAD_INPUT,
    Reason.INVALID_CORPUS: ExitCode.BAD_INPUT,
    Reason.LOSS_FORMAT_MISMATCH: ExitCode.BAD_INPUT,
    Reason.MODEL_NOT_FOUND: ExitCode.BAD_INPUT,
    Reason.S3_ACCESS_DENIED: ExitCode.BAD_INPUT,
    Reason.S3_NOT_FOUND: ExitCode.BAD_INPUT,
    Reason.S3_UNAVAILABLE: ExitCode.RETRYABLE,
    Reason.OOM: ExitCode.OUT_OF_MEMORY,
    Reason.PROMOTION_REJECTED: ExitCode.PROMOTION_REJECTED,
    Reason.GENERATION_FAILED: ExitCode.RETRYABLE,
    Reason.GENERATOR_MISCONFIGURED: ExitCode.BAD_INPUT,
    Reason.REGISTRY_FAILED: ExitCode.RETRYABLE,
    Reason.CRASHED: ExitCode.CRASHED,
}


def _short_hash(text: str, n: int = 5) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


#: Spec fields that say when runs start and whom they tell, not what a run does (eft_api.retrain).
RUN_NEUTRAL_FIELDS = ("retrain", "notify")


def spec_digest(spec: EmbeddingFinetuneSpec) -> str:
    """A hash of what defines a run: the fields of the spec set away from their defaults, less
    ``runPolicy.suspend``, ``retrain`` and ``notify``.

    Suspending or resuming a run, or changing when runs start or whom they tell, is not a new run; every
    other change of spec is. A field at its default
    does not count, whether it is spelled out or not, so an operator upgrade that adds fields (with
    defaults) to the API keeps every existing resource's run id.
    """
    doc = spec.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True)
    for key in RUN_NEUTRAL_FIELDS:
        doc.pop(key, None)
    policy = doc.pop("runPolicy", {})
    policy.pop("suspend", None)
    if policy:
        doc["runPolicy"] = policy
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def run_id(uid: str, generation: int, digest: str, salt: str = "") -> str:
    """The id of the run that trains ``generation`` of the resource with ``uid`` and spec ``digest``.

    ``g<generation>-<hash of uid and spec digest>``. The uid keeps a deleted and re-created resource of
    the same name from reusing (and so overwriting) an earlier resource's publication prefix; the spec
    digest keeps an edited spec from ever returning an earlier result where the generation does not
    move (``eft run`` on a file, a resource re-created from Git). ``salt`` (eft_api.retrain.RunTrigger.salt:
    the trigger, its time and the data digest) separates runs of one spec on different data or occasions;
    empty, the id is what it always was.
    """
    return f"g{generation}-{_short_hash(f'{uid}/{digest}' + (f'/{salt}' if salt else ''))}"


def child_name(name: str, rid: str, indexes: int = 1) -> str:
    """Name of a run's Job and ConfigMap: at most 63 characters (it becomes a label value), deterministic.

    A Job of ``indexes`` > 1 pods (an Indexed Job) names its pods' hostnames ``<job>-<index>``, DNS labels of
    at most 63 characters without dots too: the name leaves room for the largest index, dots become dashes."""
    suffix = f"-{rid}"
    room = len(f"-{indexes - 1}") if indexes > 1 else 0
    head = name[: 63 - len(suffix) - room].rstrip("-.")
    if indexes > 1:
        head = head.replace(".", "-")
    return f"{head}{suffix}"


def output_prefix(output_uri: str, namespace: str, name: str, rid: str) -> str:
    """The run's publication prefix: ``<output>/<namespace>/<name>/<run id>/``."""
    return f"{output_uri.rstrip('/')}/{namespace}/{name}/{rid}/"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class RunIdentity(_Model):
    namespace: str
    name: str
    uid: str
    generation: int
    run_id: str
    output_prefix: str
    #: Why the run runs (eft_api.retrain.Trigger), when not a plain spec change.
    trigger: str | None = None
    #: The digest of the data listing the run was started for (spec.retrain.onDataChange), if known.
    data_digest: str | None = None


class TrainerSettings(_Model):
    """Settings of the operator (or of ``eft run``) that the trainer needs; none is a credential."""

    work_dir: str = "/work"
    metrics_port: int = Field(default=9090, ge=0, le=65535)
    #: Local folder of model files for offline use (maps hub ids to folders); empty in a cluster.
    model_cache_dir: str | None = None


class ModelReuse(_Model):
    """An earlier run's trained model (same training digest): the run re-measures and re-gates it, no training."""

    run_id: str
    #: Where its trained weights are (before any merge): its ``model/`` or ``checkpoints/trained-model/``.
    uri: str


class RunConfig(_Model):
    """Seam 2: everything a trainer run needs, resolved by the operator (or ``eft run``)."""

    api_version: Literal["finetune.eft.dev/v1alpha1"] = "finetune.eft.dev/v1alpha1"
    kind: Literal["RunConfig"] = "RunConfig"
    run: RunIdentity
    spec: EmbeddingFinetuneSpec
    settings: TrainerSettings = Field(default_factory=TrainerSettings)
    reuse_model_from: ModelReuse | None = None

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True, indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> RunConfig:
        return cls.model_validate_json(text)


def build_run_config(
    *,
    namespace: str,
    name: str,
    uid: str,
    generation: int,
    spec: EmbeddingFinetuneSpec,
    settings: TrainerSettings | None = None,
    reuse_model_from: ModelReuse | None = None,
    trigger: RunTrigger | None = None,
) -> RunConfig:
    rid = run_id(uid, generation, spec_digest(spec), run_salt(trigger))
    return RunConfig(
        run=RunIdentity(
            namespace=namespace,
            name=name,
            uid=uid,
            generation=generation,
            run_id=rid,
            output_prefix=output_prefix(spec.output.uri, namespace, name, rid),
            trigger=trigger.kind if trigger is not None and trigger.salt() else None,
            data_digest=trigger.data_digest if trigger is not None else None,
        ),
        spec=spec,
        settings=settings or TrainerSettings(),
        reuse_model_from=reuse_model_from,
    )


class Headline(_Model):
    primary_metric: str
    dimension: int
    base: float
    finetuned: float
    gain: float


class Artifacts(_Model):
    model: str | None = None
    report: str | None = None
    manifest: str | None = None
    #: A query adapter alone (method queryAdapter), beside the model.
    adapter: str | None = None
    #: The trained weights before any merge, kept when model/ does not hold them (a merge, or a rejection),
    #: so that a later generation with the same training digest re-gates without training.
    trained_model: str | None = None


class IndexSummary(_Model):
    """What an index owner must do with the published model (the manifest and model card say more)."""

    #: Whether document embeddings made with the base model must be recomputed (false for queryAdapter).
    reindex_required: bool
    dimension: int
    similarity: str
    normalized: bool


class GenerationSummary(_Model):
    """Headline counts of pairs generated from documents (format documents)."""

    dataset: str
    reused: bool
    documents: int
    chunks: int
    pairs: int
    dropped: int
    requests: int = 0
    #: Document files refused unread (over a size cap, or nested too deep), counted by reason in the data card.
    refused: int = 0


class GuardFigures(_Model):
    """One guard against forgetting (spec.evaluation.guards): its primary metric base vs fine-tuned, rounded."""

    name: str
    base: float
    finetuned: float
    delta: float
    #: The 95% paired-bootstrap interval of ``delta``.
    ci_low: float
    ci_high: float
    max_drop: float
    passed: bool


class BaselineFigures(_Model):
    """A baseline (spec.evaluation.baselines) on the evaluation set: its primary metric and the fine-tuned
    model minus it with the 95% paired-bootstrap interval; or why it could not be measured."""

    name: str
    primary: float | None = None
    finetuned_minus: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    error: str | None = None


class OomFallback(_Model):
    """An in-batch loss switched to its cached variant after running out of memory (eft_trainer.oom).

    In the message of a run that succeeded: what it trained with; of an attempt that failed: what the next
    attempt (``attempt``) trains with."""

    from_loss: str
    to_loss: str
    mini_batch_size: int
    attempt: int


class RegistryInfo(_Model):
    """The model registry version a run was registered as (spec.output.registry)."""

    model_name: str
    version: str
    #: The alias moved to it (None: the run did not pass the gate, the alias stayed).
    alias: str | None = None


class TerminationMessage(_Model):
    """Seam 4: the short JSON summary the trainer leaves in its container's termination message."""

    outcome: Literal["Succeeded", "Failed"]
    reason: str
    message: str = ""
    run_id: str | None = None
    headline: Headline | None = None
    index: IndexSummary | None = None
    artifacts: Artifacts | None = None
    generation: GenerationSummary | None = None
    #: At most 8 (the CRD's bound): about 1 KB of the 4 KB.
    guards: list[GuardFigures] | None = None
    oom_fallback: OomFallback | None = None
    #: evaluation.baselines in short: at most 8 (the CRD's bound).
    baselines: list[BaselineFigures] | None = None
    #: The merge ratio published (training.merge), 1 being the fine-tuned model.
    merge_ratio: float | None = None
    #: The run whose trained model this run re-gated (no training).
    reused_model_from: str | None = None
    registry: RegistryInfo | None = None

    def to_json(self) -> str:
        """Serialise within :data:`TERMINATION_MESSAGE_LIMIT` bytes, shortening the message if need be."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        if len(text.encode()) <= TERMINATION_MESSAGE_LIMIT:
            return text
        over = len(text.encode()) - TERMINATION_MESSAGE_LIMIT
        msg = data.get("message", "")
        keep = max(0, len(msg.encode()) - over - 16)
        data["message"] = msg.encode()[:keep].decode(errors="ignore") + " [truncated]"
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        return text

    @classmethod
    def parse(cls, text: str | None) -> TerminationMessage | None:
        """Read a termination message; ``None`` when absent or not ours (a crash may leave anything)."""
        if not text:
            return None
        try:
            return cls.model_validate(json.loads(text))
        except (ValueError, TypeError):
            return None


# ---------------------------------------------------------------- constants shared by the operator and the trainer
# One home for each (issue 10): the operator renders the Job from these, the trainer reads its pod from them.

#: Where the run config's ConfigMap is mounted in the trainer's pod, and the file ``EFT_RUN_CONFIG`` names there.
RUN_CONFIG_DIR = "/etc/eft"
RUN_CONFIG_PATH = f"{RUN_CONFIG_DIR}/{RUN_CONFIG_KEY}"
#: The trainer's writable work folder (HOME, HF_HOME, data, checkpoints); everything else is read-only.
WORK_DIR = "/work"
#: The trainer's default ``/metrics`` port (the operator's own ports are its settings: eft_operator.config).
TRAINER_METRICS_PORT = 9090
#: The S3 credential variables: env of the trainer (from spec.storage.credentialsSecret), or file names in the
#: folder that ``S3_CREDENTIALS_DIR_ENV`` names (a mounted Secret). Their values are redacted from every message.
S3_CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
S3_CREDENTIALS_DIR_ENV = "EFT_S3_CREDENTIALS_DIR"
#: Where the trainer writes its termination message (default :data:`TERMINATION_LOG`).
TERMINATION_LOG_ENV = "EFT_TERMINATION_LOG"
#: The condition reason of a run that failed with :attr:`ExitCode.BAD_INPUT` but left no termination message.
BAD_INPUT_REASON = "BadInput"

#: The Job controller's annotation (and label) with an Indexed Job pod's index: its node in a multi-node run.
COMPLETION_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"

#: The trainer's phases in run order (its ``eft_trainer_phase_info{phase}`` gauge and its log lines); the operator
#: turns them into ``status.trainerStatus`` (eft_operator.progress), tolerating phases it does not know.
TRAINER_PHASES = (
    "fetch",
    "generate",
    "check",
    "evaluate-base",
    "mine",
    "label",
    "pretrain",
    "train",
    "evaluate-finetuned",
    "evaluate-teacher",
    "merge",
    "baselines",
    "publish",
    "done",
    "failed",
)
