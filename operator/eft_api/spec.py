"""The typed model of an EmbeddingFinetune spec.

This is the one Python reading of ``crds/embeddingfinetunes.yaml``: the operator, the trainer and the
``eft`` command all parse a spec through :func:`parse_spec` (or :func:`parse_resource`). Field names are
the CRD's camelCase names; defaults, enums, ranges and the cross-field rules mirror the CRD's schema and
CEL rules, and ``tests/test_api_agreement.py`` proves the two agree on every example and on a corpus of
invalid resources. Pure: no I/O, no kopf, kubernetes, boto3 or torch.
"""

from __future__ import annotations

import re
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from eft_api.retrain import PATTERN_HINTS as RETRAIN_PATTERN_HINTS
from eft_api.retrain import NotifyTarget, RegistrySpec, RetrainSpec

API_GROUP = "finetune.eft.dev"
API_VERSION = "v1alpha1"
KIND = "EmbeddingFinetune"
PLURAL = "embeddingfinetunes"

S3_URI_PATTERN = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?$"
MODEL_PATTERN = (
    r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?"
    r"|[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?)$"
)
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: Kubernetes' quantity grammar (resource.Quantity), without a sign: what a Pod's resources accept.
QUANTITY = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]"
    r"|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
QUANTITY_MAX_LENGTH = 32
#: A label key (a qualified name): an optional DNS-subdomain prefix and /, then a name of at most 63.
LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
METRIC_PATTERN = r"^(ndcg|mrr|recall|map|accuracy)@[1-9][0-9]{0,3}$"
#: metadata.name becomes the value of the finetune.eft.dev/name label on the run's Job and Pods.
NAME_MAX_LENGTH = 63
#: The API server appends 5 random characters to metadata.generateName, cut to 58 characters first.
GENERATED_SUFFIX_LENGTH = 5
GENERATE_NAME_KEPT = NAME_MAX_LENGTH - GENERATED_SUFFIX_LENGTH


def _integral(value: Any) -> Any:
    """The API server stores a JSON number with an integral value (32.0) in an integer field as 32."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: Before the strict integer check: accept what the API server accepts for an integer field.
Integral = BeforeValidator(_integral)

S3Uri = Annotated[str, StringConstraints(pattern=S3_URI_PATTERN, max_length=1024)]


class DataFormat(StrEnum):
    PAIRS = "pairs"
    TRIPLETS = "triplets"
    SCORED_PAIRS = "scored-pairs"
    LABELED_TEXTS = "labeled-texts"
    BEIR = "beir"
    DOCUMENTS = "documents"
    PARALLEL = "parallel"


class Loss(StrEnum):
    MULTIPLE_NEGATIVES_RANKING = "MultipleNegativesRanking"
    CACHED_MULTIPLE_NEGATIVES_RANKING = "CachedMultipleNegativesRanking"
    MULTIPLE_NEGATIVES_SYMMETRIC_RANKING = "MultipleNegativesSymmetricRanking"
    TRIPLET = "Triplet"
    COSENT = "CoSENT"
    ANGLE = "AnglE"
    COSINE_SIMILARITY = "CosineSimilarity"
    BATCH_ALL_TRIPLET = "BatchAllTriplet"
    BATCH_HARD_TRIPLET = "BatchHardTriplet"
    BATCH_SEMI_HARD_TRIPLET = "BatchSemiHardTriplet"
    #: Only with ``training.method: distillation`` (the student regresses onto the teacher's embeddings).
    MSE = "MSE"
    #: Only with ``training.method: gpl`` (it trains on the cross-encoder's margins), which requires it.
    MARGIN_MSE = "MarginMSE"


#: Which losses fit which data format (the CRD's CEL rules say the same).
LOSSES_BY_FORMAT: dict[DataFormat, tuple[Loss, ...]] = {
    DataFormat.PAIRS: (
        Loss.MULTIPLE_NEGATIVES_RANKING,
        Loss.CACHED_MULTIPLE_NEGATIVES_RANKING,
        Loss.MULTIPLE_NEGATIVES_SYMMETRIC_RANKING,
    ),
    DataFormat.TRIPLETS: (
        Loss.MULTIPLE_NEGATIVES_RANKING,
        Loss.CACHED_MULTIPLE_NEGATIVES_RANKING,
        Loss.TRIPLET,
    ),
    DataFormat.SCORED_PAIRS: (Loss.COSENT, Loss.ANGLE, Loss.COSINE_SIMILARITY),
    DataFormat.LABELED_TEXTS: (
        Loss.BATCH_ALL_TRIPLET,
        Loss.BATCH_HARD_TRIPLET,
        Loss.BATCH_SEMI_HARD_TRIPLET,
    ),
    DataFormat.BEIR: (
        Loss.MULTIPLE_NEGATIVES_RANKING,
        Loss.CACHED_MULTIPLE_NEGATIVES_RANKING,
        Loss.MULTIPLE_NEGATIVES_SYMMETRIC_RANKING,
    ),
    DataFormat.DOCUMENTS: (
        Loss.MULTIPLE_NEGATIVES_RANKING,
        Loss.CACHED_MULTIPLE_NEGATIVES_RANKING,
        Loss.MULTIPLE_NEGATIVES_SYMMETRIC_RANKING,
    ),
    DataFormat.PARALLEL: (Loss.MSE,),
}

#: Losses that use the other examples of a batch as negatives (they want the no-duplicates sampler).
IN_BATCH_NEGATIVE_LOSSES = frozenset(
    {
        Loss.MULTIPLE_NEGATIVES_RANKING,
        Loss.CACHED_MULTIPLE_NEGATIVES_RANKING,
        Loss.MULTIPLE_NEGATIVES_SYMMETRIC_RANKING,
    }
)


class Method(StrEnum):
    FULL = "full"
    QUERY_ADAPTER = "queryAdapter"
    QUERY_ENCODER = "queryEncoder"
    DISTILLATION = "distillation"
    GPL = "gpl"


#: Formats a query adapter can learn from: an anchor (the query side) and a positive (the document side).
QUERY_ADAPTER_FORMATS = (DataFormat.PAIRS, DataFormat.TRIPLETS, DataFormat.BEIR)

#: The methods that train the query side only (document embeddings stay the base model's, bit for bit).
QUERY_SIDE_METHODS = frozenset({Method.QUERY_ADAPTER, Method.QUERY_ENCODER})

#: Formats gpl (and silver labels) learn from: (query, passage) pairs, given or generated from documents.
CROSS_ENCODER_FORMATS = (DataFormat.PAIRS, DataFormat.DOCUMENTS)

#: Formats whose anchors can get mined hard negatives.
MINABLE_FORMATS = frozenset({DataFormat.PAIRS, DataFormat.TRIPLETS, DataFormat.BEIR, DataFormat.DOCUMENTS})


#: The CRD's CEL messages of training.pretrain (one process; not with a frozen encoder).
PRETRAIN_NOT_WITH_ADAPTER = (
    "training.pretrain does not fit training.method queryAdapter: its encoder is frozen, so an adapted model "
    "would be ignored"
)
PRETRAIN_NOT_WITH_QUERY_ENCODER = (
    "training.pretrain does not fit training.method queryEncoder: its document tower is the frozen base model, "
    "so a pre-trained model would change the document side"
)
PRETRAIN_ONE_PROCESS = "training.pretrain runs in one process: set resources.gpus to 0 or 1 and resources.nodes to 1"


class _Model(BaseModel):
    """Base: camelCase field names as in the CRD, unknown fields refused, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_enum_values=False,
    )


class ModelSpec(_Model):
    base: Annotated[str, StringConstraints(pattern=MODEL_PATTERN, min_length=1, max_length=512)]
    revision: Annotated[str, StringConstraints(max_length=128)] | None = None
    max_seq_length: Annotated[int, Field(strict=True, ge=8, le=32768), Integral] | None = None
    trust_remote_code: StrictBool = False

    @property
    def is_s3(self) -> bool:
        return self.base.startswith("s3://")


class Columns(_Model):
    anchor: Annotated[str, StringConstraints(min_length=1)] = "anchor"
    positive: Annotated[str, StringConstraints(min_length=1)] = "positive"
    negatives: Annotated[list[Annotated[str, StringConstraints(min_length=1)]], Field(min_length=1, max_length=32)] = (
        Field(default_factory=lambda: ["negative"])
    )
    text1: Annotated[str, StringConstraints(min_length=1)] = "text1"
    text2: Annotated[str, StringConstraints(min_length=1)] = "text2"
    score: Annotated[str, StringConstraints(min_length=1)] = "score"
    text: Annotated[str, StringConstraints(min_length=1)] = "text"
    label: Annotated[str, StringConstraints(min_length=1)] = "label"
    source: Annotated[str, StringConstraints(min_length=1)] = "source"
    translation: Annotated[str, StringConstraints(min_length=1)] = "translation"


class DocumentType(StrEnum):
    """How a document file is read (``None`` on the spec: by its extension)."""

    PDF = "pdf"
    HTML = "html"
    MARKDOWN = "markdown"
    RESTRUCTURED_TEXT = "restructuredtext"
    TEXT = "text"
    JSONL = "jsonl"


# ---- spec.data.generate: pairs made from documents (format documents only)

#: An http(s) URL without user-info (no ``@`` anywhere: credentials go in a Secret, never in a URL).
HTTP_URL = r"^https?://[^\s/@]+(/[^\s@]*)?$"
CONFIG_KEY = r"^[-._a-zA-Z0-9]+$"


class Chunking(_Model):
    size: Annotated[int, Field(strict=True, ge=16, le=8192), Integral] = 256
    overlap: Annotated[int, Field(strict=True, ge=0, le=4096), Integral] = 32

    @model_validator(mode="after")
    def _overlap_below_size(self) -> Chunking:
        if self.overlap >= self.size:
            raise SpecRuleError(("overlap",), "data.generate.chunking.overlap must be below chunking.size")
        return self


class DocumentLimits(_Model):
    """Size caps on the documents read: a larger file, or one past the total, is refused and counted."""

    max_file_bytes: Annotated[int, Field(strict=True, ge=1024, le=1 << 30), Integral] = 8 << 20
    max_total_bytes: Annotated[int, Field(strict=True, ge=1024, le=1 << 40), Integral] = 1 << 30

    @model_validator(mode="after")
    def _file_within_total(self) -> DocumentLimits:
        if self.max_file_bytes > self.max_total_bytes:
            raise SpecRuleError(
                ("maxFileBytes",), "data.generate.limits.maxFileBytes must not exceed limits.maxTotalBytes"
            )
        return self


class InverseCloze(_Model):
    remove_query: StrictBool = True


class Titles(_Model):
    with_document_title: StrictBool = True


class KeyRef(_Model):
    """A key of a Secret or ConfigMap in the resource's own namespace."""

    name: Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN, max_length=253)]
    key: Annotated[str, StringConstraints(pattern=CONFIG_KEY, max_length=253)] = "apiKey"


class PromptRef(KeyRef):
    key: Annotated[str, StringConstraints(pattern=CONFIG_KEY, max_length=253)] = "prompt"


class LLMGenerator(_Model):
    endpoint: Annotated[str, StringConstraints(pattern=HTTP_URL, max_length=512)]
    model: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    api_key_secret: KeyRef | None = None
    prompt_config_map: PromptRef | None = None
    temperature: Annotated[float, Field(strict=True, ge=0, le=2)] = 0.7
    max_concurrency: Annotated[int, Field(strict=True, ge=1, le=256), Integral] = 8
    timeout_seconds: Annotated[int, Field(strict=True, ge=1, le=3600), Integral] = 60
    max_requests: Annotated[int, Field(strict=True, ge=1, le=10_000_000), Integral] = 10000
    max_retries: Annotated[int, Field(strict=True, ge=0, le=20), Integral] = 4
    max_failure_rate: Annotated[float, Field(strict=True, ge=0, le=1)] = 0.1


class Seq2SeqGenerator(_Model):
    model: Annotated[str, StringConstraints(pattern=MODEL_PATTERN, min_length=1, max_length=512)]
    max_query_tokens: Annotated[int, Field(strict=True, ge=8, le=512), Integral] = 64
    batch_size: Annotated[int, Field(strict=True, ge=1, le=1024), Integral] = 16
    top_p: Annotated[float, Field(strict=True, gt=0, le=1)] = 0.95


class Generator(_Model):
    inverse_cloze: InverseCloze | None = None
    titles: Titles | None = None
    llm: LLMGenerator | None = None
    seq2seq: Seq2SeqGenerator | None = Field(default=None, alias="seq2seq")

    @model_validator(mode="after")
    def _at_least_one(self) -> Generator:
        if all(g is None for g in (self.inverse_cloze, self.titles, self.llm, self.seq2seq)):
            raise SpecRuleError((), "data.generate.generator must set inverseCloze, titles, llm or seq2seq")
        return self

    @property
    def names(self) -> list[str]:
        """The generators set, in a fixed order: inverseCloze, titles, llm, seq2seq."""
        fields = (("inverseCloze", self.inverse_cloze), ("titles", self.titles), ("llm", self.llm))
        return [n for n, v in (*fields, ("seq2seq", self.seq2seq)) if v is not None]


class RoundTrip(_Model):
    enabled: StrictBool = False
    top_k: Annotated[int, Field(strict=True, ge=1, le=1000), Integral] = 1


class Easiness(_Model):
    drop_fraction: Annotated[float, Field(strict=True, ge=0, le=0.9)] = 0


class GenerateFilter(_Model):
    min_query_chars: Annotated[int, Field(strict=True, ge=0, le=1000), Integral] = 8
    near_duplicate_threshold: Annotated[float, Field(strict=True, ge=0.5, le=1)] = 0.9
    round_trip: RoundTrip = Field(default_factory=RoundTrip)
    easiness: Easiness = Field(default_factory=Easiness)


class GenerateSpec(_Model):
    limits: DocumentLimits = Field(default_factory=DocumentLimits)
    chunking: Chunking = Field(default_factory=Chunking)
    queries_per_chunk: Annotated[int, Field(strict=True, ge=1, le=16), Integral] = 1
    max_chunks: Annotated[int, Field(strict=True, ge=1, le=10_000_000), Integral] = 10000
    seed: Annotated[int, Field(strict=True, ge=0, le=4294967295), Integral] = 42
    generator: Generator
    filter: GenerateFilter = Field(default_factory=GenerateFilter)


class TrainData(_Model):
    uri: S3Uri
    format: DataFormat
    file_type: Literal["jsonl", "csv", "parquet"] = "jsonl"
    columns: Columns = Field(default_factory=Columns)
    document_type: DocumentType | None = None

    @model_validator(mode="after")
    def _beir_is_a_prefix(self) -> TrainData:
        if self.format is DataFormat.BEIR and not self.uri.endswith("/"):
            raise SpecRuleError(
                ("uri",), "must be a prefix ending in / for format beir (it holds corpus, queries and qrels/)"
            )
        if self.document_type is not None and self.format is not DataFormat.DOCUMENTS:
            raise SpecRuleError(
                ("documentType",), "data.train.documentType applies to data.train.format documents only"
            )
        return self


class EvalData(_Model):
    uri: S3Uri | None = None
    held_out_fraction: Annotated[float, Field(strict=True, ge=0.01, le=0.5)] = 0.1
    seed: Annotated[int, Field(strict=True, ge=0, le=4294967295), Integral] = 42
    max_distractors: Annotated[int, Field(strict=True, ge=0, le=10_000_000), Integral] = 10000


class DataSpec(_Model):
    train: TrainData
    eval: EvalData = Field(default_factory=EvalData)
    generate: GenerateSpec | None = None

    @model_validator(mode="after")
    def _generate_iff_documents(self) -> DataSpec:
        if (self.generate is not None) != (self.train.format is DataFormat.DOCUMENTS):
            raise SpecRuleError(
                ("generate",), "data.generate is required with data.train.format documents and allowed only there"
            )
        return self


class HardNegatives(_Model):
    enabled: StrictBool = False
    count: Annotated[int, Field(strict=True, ge=1, le=50), Integral] = 3
    margin: Annotated[float, Field(strict=True, ge=0, le=1)] = 0.05
    range_max: Annotated[int, Field(strict=True, ge=1, le=1000), Integral] = 50


class CrossEncoderSpec(_Model):
    """The cross-encoder of gpl (margins) and silver labels (scores): a model reference like ``spec.model``."""

    model: Annotated[str, StringConstraints(pattern=MODEL_PATTERN, min_length=1, max_length=512)]
    revision: Annotated[str, StringConstraints(max_length=128)] | None = None
    max_length: Annotated[int, Field(strict=True, ge=8, le=32768), Integral] | None = None
    batch_size: Annotated[int, Field(strict=True, ge=1, le=4096), Integral] = 32

    @property
    def is_s3(self) -> bool:
        return self.model.startswith("s3://")


class SilverLabels(_Model):
    """AugSBERT: unlabelled (anchor, positive) pairs plus sampled negatives, scored by the cross-encoder."""

    negatives_per_pair: Annotated[int, Field(strict=True, ge=0, le=16), Integral] = 1
    seed: Annotated[int, Field(strict=True, ge=0, le=4294967295), Integral] = 42


class AdapterSpec(_Model):
    """The trainable query-side module of ``method: queryAdapter``."""

    kind: Literal["linear", "mlp"] = "linear"
    hidden_dim: Annotated[int, Field(strict=True, ge=8, le=16384), Integral] = 256
    #: linear only: train a rank-``rank`` update of the identity (I + U V^T) instead of a full square matrix.
    rank: Annotated[int, Field(strict=True, ge=1, le=16384), Integral] | None = None
    learning_rate: Annotated[float, Field(strict=True, gt=0, le=1)] = 0.001
    #: Try learningRate / 3, learningRate and 3 x learningRate; keep the best on the validation split.
    learning_rate_search: StrictBool = True


class EarlyStopping(_Model):
    """The internal validation split of the query-side methods: epochs (and the adapter's learning rate) are
    chosen on it, training stops after ``patience`` epochs without improvement and keeps the best epoch."""

    #: 0 (the default): every row trains for training.epochs (on the sample, early stopping stopped the adapter
    #: too early: docs/methods.md).
    validation_split: Annotated[float, Field(strict=True, ge=0, le=0.5)] = 0.0
    patience: Annotated[int, Field(strict=True, ge=1, le=100), Integral] = 2


class TeacherSpec(ModelSpec):
    """The model whose embeddings the student learns in ``method: distillation`` (a model reference like spec.model)."""

    #: none: the teacher's dimension must equal the student's; pca: a wider teacher's embeddings are reduced to
    #: the student's dimension by PCA (the sentence-transformers model-distillation recipe).
    projection: Literal["none", "pca"] = "none"


class PretrainMethod(StrEnum):
    TSDAE = "tsdae"


class PretrainColumns(_Model):
    text: Annotated[str, StringConstraints(min_length=1, max_length=256)] = "text"


class PretrainData(_Model):
    """Raw text of its own for the pre-training stage (else the texts of the training data are used)."""

    uri: S3Uri
    file_type: Literal["jsonl", "csv", "parquet"] = "jsonl"
    columns: PretrainColumns = Field(default_factory=PretrainColumns)


class PretrainSpec(_Model):
    """An unsupervised first stage (``training.pretrain``): domain adaptation on raw sentences before the method."""

    method: PretrainMethod = PretrainMethod.TSDAE
    epochs: Annotated[float, Field(strict=True, gt=0, le=100)] = 1
    learning_rate: Annotated[float, Field(strict=True, gt=0, le=1)] = 3e-5
    batch_size: Annotated[int, Field(strict=True, ge=1, le=65536), Integral] = 8
    max_sentences: Annotated[int, Field(strict=True, ge=10, le=10_000_000), Integral] = 100_000
    deletion_ratio: Annotated[float, Field(strict=True, ge=0, le=0.9)] = 0.6
    data: PretrainData | None = None


class MergeSpec(_Model):
    """Weight interpolation between the base and the fine-tuned model (WiSE-FT) against forgetting."""

    enabled: StrictBool = False
    #: Ratios to try (1 is the fine-tuned model); empty means searched.
    ratios: Annotated[list[Annotated[float, Field(strict=True, gt=0, le=1)]], Field(max_length=16)] = Field(
        default_factory=list
    )

    @field_validator("ratios")
    @classmethod
    def _unique_ratios(cls, ratios: list[float]) -> list[float]:
        if len(set(ratios)) != len(ratios):
            raise ValueError("must not repeat a value (it is a set)")
        return ratios


class TrainingSpec(_Model):
    method: Method = Method.FULL
    adapter: AdapterSpec = Field(default_factory=AdapterSpec)
    teacher: TeacherSpec | None = None
    loss: Loss = Loss.MULTIPLE_NEGATIVES_RANKING
    matryoshka_dims: Annotated[
        list[Annotated[int, Field(strict=True, ge=8, le=16384), Integral]], Field(max_length=16)
    ] = Field(default_factory=list)
    epochs: Annotated[float, Field(strict=True, gt=0, le=100)] = 1
    batch_size: Annotated[int, Field(strict=True, ge=2, le=65536), Integral] = 32
    mini_batch_size: Annotated[int, Field(strict=True, ge=1, le=4096), Integral] = 32
    learning_rate: Annotated[float, Field(strict=True, gt=0, le=1)] = 2e-5
    warmup_ratio: Annotated[float, Field(strict=True, ge=0, le=0.5)] = 0.1
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    seed: Annotated[int, Field(strict=True, ge=0, le=4294967295), Integral] = 42
    checkpoint_steps: Annotated[int, Field(strict=True, ge=10, le=1_000_000), Integral] = 500
    hard_negatives: HardNegatives = Field(default_factory=HardNegatives)
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    cross_encoder: CrossEncoderSpec | None = None
    silver_labels: SilverLabels | None = None
    pretrain: PretrainSpec | None = None
    merge: MergeSpec = Field(default_factory=lambda: MergeSpec())

    @field_validator("matryoshka_dims")
    @classmethod
    def _strictly_decreasing(cls, dims: list[int]) -> list[int]:
        for i in range(1, len(dims)):
            if dims[i] >= dims[i - 1]:
                raise ValueError(
                    f"must be strictly decreasing, but item {i} ({dims[i]}) is not below item {i - 1} ({dims[i - 1]})"
                )
        return dims


class Gate(_Model):
    min_gain: Annotated[float, Field(strict=True, ge=-1, le=1)]
    dimension: Annotated[int, Field(strict=True, ge=8, le=16384), Integral] | None = None
    #: Baselines (by name) the fine-tuned model must beat on the primary metric.
    must_beat: Annotated[
        list[Annotated[str, StringConstraints(pattern=DNS_LABEL, max_length=63)]], Field(max_length=8)
    ] = Field(default_factory=list)
    #: How a comparison is decided: on the estimate, or on the lower end of its bootstrap CI (guards too).
    decide_by: Literal["estimate", "ciLower"] = "estimate"


#: The refusal of an endpoint URL with user-info (CRD rule and typed model say the same).
USER_INFO_MESSAGE = "must not carry user-info (user:password@): put the API key in apiKeySecret"


class EndpointBaseline(_Model):
    """An OpenAI-compatible embeddings endpoint measured as a baseline."""

    url: Annotated[str, StringConstraints(pattern=HTTP_URL, max_length=512)]
    model: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    api_key_secret: KeyRef | None = None
    dimensions: Annotated[int, Field(strict=True, ge=1, le=16384), Integral] | None = None
    batch_size: Annotated[int, Field(strict=True, ge=1, le=2048), Integral] = 64
    max_concurrency: Annotated[int, Field(strict=True, ge=1, le=64), Integral] = 4
    max_retries: Annotated[int, Field(strict=True, ge=0, le=20), Integral] = 4
    timeout_seconds: Annotated[int, Field(strict=True, ge=1, le=3600), Integral] = 60

    @field_validator("url")
    @classmethod
    def _no_user_info(cls, url: str) -> str:
        if "@" in url.split("://", 1)[1].split("/", 1)[0]:
            raise ValueError(USER_INFO_MESSAGE)
        return url


class Baseline(_Model):
    """Something the fine-tuned model is compared with: a model (like ``spec.model``) or an embeddings API."""

    name: Annotated[str, StringConstraints(pattern=DNS_LABEL, max_length=63)]
    model: ModelSpec | None = None
    endpoint: EndpointBaseline | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Baseline:
        if (self.model is None) == (self.endpoint is None):
            raise SpecRuleError((), "a baseline needs exactly one of model and endpoint")
        return self


class GuardColumns(_Model):
    anchor: Annotated[str, StringConstraints(min_length=1, max_length=256)] = "anchor"
    positive: Annotated[str, StringConstraints(min_length=1, max_length=256)] = "positive"


class Guard(_Model):
    """A further evaluation set the fine-tuned model must not get worse on by more than ``max_drop``."""

    name: Annotated[str, StringConstraints(pattern=DNS_LABEL, max_length=63)]
    uri: S3Uri
    format: Literal[DataFormat.PAIRS, DataFormat.BEIR] = DataFormat.PAIRS
    file_type: Literal["jsonl", "csv", "parquet"] = "jsonl"
    columns: GuardColumns = Field(default_factory=GuardColumns)
    max_drop: Annotated[float, Field(strict=True, ge=0, le=1)] = 0.0

    @model_validator(mode="after")
    def _beir_is_a_prefix(self) -> Guard:
        if self.format is DataFormat.BEIR and not self.uri.endswith("/"):
            raise SpecRuleError(("uri",), "a guard's uri must be a prefix ending in / for format beir")
        return self


MUST_BEAT_MESSAGE = "evaluation.gate.mustBeat must name baselines in evaluation.baselines"


class EvaluationSpec(_Model):
    k_values: Annotated[
        list[Annotated[int, Field(strict=True, ge=1, le=1000), Integral]], Field(min_length=1, max_length=10)
    ] = Field(default_factory=lambda: [1, 3, 5, 10])
    primary_metric: Annotated[str, StringConstraints(pattern=METRIC_PATTERN, max_length=16)] = "ndcg@10"
    batch_size: Annotated[int, Field(strict=True, ge=1, le=65536), Integral] = 128
    gate: Gate | None = None
    guards: Annotated[list[Guard], Field(max_length=8)] = Field(default_factory=list)
    baselines: Annotated[list[Baseline], Field(max_length=8)] = Field(default_factory=list)

    @field_validator("k_values")
    @classmethod
    def _unique(cls, ks: list[int]) -> list[int]:
        if len(set(ks)) != len(ks):
            raise ValueError("must not repeat a value (it is a set)")
        return ks

    @model_validator(mode="after")
    def _unique_guard_names(self) -> EvaluationSpec:
        names = [g.name for g in self.guards]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise SpecRuleError(("guards", i), f"repeats the name {name!r} (a guard's name is its key)")
        known = [b.name for b in self.baselines]
        for i, name in enumerate(known):
            if name in known[:i]:
                raise SpecRuleError(("baselines", i), f"repeats the name {name!r} (a baseline's name is its key)")
        for name in self.gate.must_beat if self.gate else []:
            if name not in known:
                raise SpecRuleError(("gate", "mustBeat"), MUST_BEAT_MESSAGE)
        return self

    @property
    def primary_k(self) -> int:
        return int(self.primary_metric.split("@", 1)[1])


class OutputSpec(_Model):
    uri: S3Uri
    registry: RegistrySpec | None = None


class SecretRef(_Model):
    name: Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN, max_length=253)]


class StorageSpec(_Model):
    endpoint: Annotated[str, StringConstraints(pattern=HTTP_URL, max_length=512)] | None = None
    region: Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]+$", max_length=64)] = "us-east-1"
    path_style: StrictBool = False
    credentials_secret: SecretRef | None = None


def quantity_value(text: str) -> Decimal:
    """The value of a quantity string that matches :data:`QUANTITY` (for its sign and size, not for arithmetic)."""
    m = re.match(r"^([0-9.]+)(.*)$", text)
    assert m is not None
    number, suffix = Decimal(m.group(1)), m.group(2)
    if suffix[:1] in ("e", "E"):
        return number.scaleb(int(suffix[1:]))
    return number  # binary and decimal suffixes scale by a positive factor: the sign is the number's


def _check_quantity(example: str) -> Any:
    def check(value: Any) -> int | str:
        value = _integral(value)
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"must be a Kubernetes quantity (an integer or a string such as {example})")
        if isinstance(value, str):
            if len(value) > QUANTITY_MAX_LENGTH:
                raise ValueError(f"must be at most {QUANTITY_MAX_LENGTH} characters")
            if not re.match(QUANTITY, value):
                raise ValueError(f"{value!r} is not a Kubernetes quantity such as {example}")
        if (value if isinstance(value, int) else quantity_value(value)) <= 0:
            raise ValueError("must be a positive Kubernetes quantity")
        return value

    return check


def _quantity(example: str) -> Any:
    return Annotated[int | str, PlainValidator(_check_quantity(example))]


class ResourcesSpec(_Model):
    gpus: Annotated[int, Field(strict=True, ge=0, le=16), Integral] = 1
    nodes: Annotated[int, Field(strict=True, ge=1, le=64), Integral] = 1
    gpu_resource_name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9.-]+/[a-z0-9._-]+$", max_length=253)] = (
        "nvidia.com/gpu"
    )
    cpu: _quantity("4 or 500m") = "4"  # type: ignore[valid-type]
    memory: _quantity("16Gi") = "16Gi"  # type: ignore[valid-type]
    work_dir_size: _quantity("20Gi") = "20Gi"  # type: ignore[valid-type]


LabelValue = Annotated[str, StringConstraints(pattern=LABEL_VALUE, max_length=63)]


class Toleration(_Model):
    key: Annotated[str, StringConstraints(pattern=LABEL_KEY, max_length=317)] | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: LabelValue | None = None
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: Annotated[int, Field(strict=True, ge=0), Integral] | None = None

    @model_validator(mode="after")
    def _pod_rules(self) -> Toleration:
        # The rules a Pod's tolerations must keep (and the CRD's CEL rules on each toleration).
        if not self.key and self.operator != "Exists":
            raise SpecRuleError(("operator",), "a toleration without a key must have operator Exists")
        if self.operator == "Exists" and self.value:
            raise SpecRuleError(("value",), "a toleration with operator Exists must not have a value")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise SpecRuleError(("tolerationSeconds",), "tolerationSeconds needs effect NoExecute")
        return self


def _check_label_keys(selector: dict[str, str]) -> dict[str, str]:
    for key in selector:
        prefix = key.split("/", 1)[0] if "/" in key else ""
        if len(key) > 317 or len(prefix) > 253 or not re.match(LABEL_KEY, key):
            raise ValueError(
                f"key {key!r} is not a label key: an optional DNS-subdomain prefix and /, then at most 63 "
                "characters of a-z, A-Z, 0-9, -, _ and ."
            )
    return selector


class SchedulingSpec(_Model):
    node_selector: Annotated[dict[str, LabelValue], Field(max_length=64)] = Field(default_factory=dict)
    tolerations: Annotated[list[Toleration], Field(max_length=32)] = Field(default_factory=list)
    priority_class_name: Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN, max_length=253)] | None = None
    queue_name: Annotated[str, StringConstraints(pattern=DNS_LABEL, max_length=63)] | None = None

    _label_keys = field_validator("node_selector")(_check_label_keys)


class RunPolicy(_Model):
    suspend: StrictBool = False
    backoff_limit: Annotated[int, Field(strict=True, ge=0, le=10), Integral] = 2
    active_deadline_seconds: Annotated[int, Field(strict=True, ge=60, le=2592000), Integral] = 86400
    ttl_seconds_after_finished: Annotated[int, Field(strict=True, ge=0, le=31536000), Integral] = 604800


class EmbeddingFinetuneSpec(_Model):
    model: ModelSpec
    data: DataSpec
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    output: OutputSpec
    storage: StorageSpec = Field(default_factory=StorageSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec)
    image: Annotated[str, StringConstraints(pattern=r"^[^\s]+$", max_length=512)] | None = None
    run_policy: RunPolicy = Field(default_factory=RunPolicy)
    retrain: RetrainSpec | None = None
    notify: Annotated[list[NotifyTarget], Field(max_length=8)] | None = None

    @model_validator(mode="after")
    def _cross_field_rules(self) -> EmbeddingFinetuneSpec:
        # The same rules as the CRD's x-kubernetes-validations, with the same messages.
        fmt = self.data.train.format
        _distillation_rules(self.training, fmt)
        if self.training.method in QUERY_SIDE_METHODS and fmt not in QUERY_ADAPTER_FORMATS:
            raise SpecRuleError(
                ("training", "method"),
                f"{self.training.method.value} does not fit data.train.format {fmt.value}: it learns from "
                "(query, document) pairs against the base model's fixed document embeddings, so use pairs, "
                "triplets or beir",
            )
        _cross_encoder_rules(self.training, fmt)
        fitting = LOSSES_BY_FORMAT[training_format(self)]
        if self.training.method not in (Method.DISTILLATION, Method.GPL) and self.training.loss not in fitting:
            what = (
                "training.silverLabels (scored pairs)"
                if self.training.silver_labels
                else f"data.train.format {fmt.value}"
            )
            raise SpecRuleError(
                ("training", "loss"),
                f"{self.training.loss.value} does not fit {what}: use " + _either(l.value for l in fitting),
            )
        if self.training.method in QUERY_SIDE_METHODS and self.training.loss not in IN_BATCH_NEGATIVE_LOSSES:
            raise SpecRuleError(
                ("training", "loss"),
                f"{self.training.loss.value} does not fit training.method {self.training.method.value}: use "
                + _either(l.value for l in sorted(IN_BATCH_NEGATIVE_LOSSES)),
            )
        if self.training.hard_negatives.enabled and fmt not in MINABLE_FORMATS:
            raise SpecRuleError(
                ("training", "hardNegatives", "enabled"),
                "hard negatives can only be mined for data.train.format pairs, triplets, beir or documents",
            )
        if self.training.pretrain is not None:
            if self.training.method is Method.QUERY_ADAPTER:
                raise SpecRuleError(("training", "pretrain"), PRETRAIN_NOT_WITH_ADAPTER)
            if self.training.method is Method.QUERY_ENCODER:
                raise SpecRuleError(("training", "pretrain"), PRETRAIN_NOT_WITH_QUERY_ENCODER)
            if self.resources.gpus > 1 or self.resources.nodes > 1:
                raise SpecRuleError(("training", "pretrain"), PRETRAIN_ONE_PROCESS)
        ev = self.evaluation
        if ev.primary_k not in ev.k_values:
            raise SpecRuleError(
                ("evaluation", "primaryMetric"),
                f"{ev.primary_metric} uses k={ev.primary_k}, which is not in evaluation.kValues {ev.k_values}",
            )
        gen = self.data.generate
        if gen is not None and self.model.max_seq_length and gen.chunking.size > self.model.max_seq_length:
            raise SpecRuleError(
                ("data", "generate", "chunking", "size"),
                "data.generate.chunking.size must not exceed model.maxSeqLength (a chunk must fit the model)",
            )
        dims = self.training.matryoshka_dims
        if ev.gate is not None and ev.gate.dimension is not None and dims and ev.gate.dimension not in dims:
            raise SpecRuleError(
                ("evaluation", "gate", "dimension"),
                f"{ev.gate.dimension} is not one of training.matryoshkaDims {dims}",
            )
        return self


def _distillation_rules(training: TrainingSpec, fmt: DataFormat) -> None:
    """The CRD's rules on method distillation, its teacher, loss MSE and format parallel (same messages)."""
    distilling = training.method is Method.DISTILLATION
    if fmt is DataFormat.PARALLEL and not distilling:
        raise SpecRuleError(
            ("data", "train", "format"),
            "data.train.format parallel needs training.method distillation (a source and its translation "
            "carry no relevance label to train a ranking loss on)",
        )
    if (training.teacher is not None) != distilling:
        raise SpecRuleError(
            ("training", "teacher"),
            "training.teacher is required with training.method distillation and allowed only there",
        )
    if distilling and training.loss is not Loss.MSE:
        raise SpecRuleError(
            ("training", "loss"),
            "training.loss must be MSE with training.method distillation (the student regresses onto the "
            "teacher's embeddings)",
        )
    if not distilling and training.loss is Loss.MSE:
        raise SpecRuleError(
            ("training", "loss"),
            "training.loss MSE needs training.method distillation (its targets are a teacher's embeddings)",
        )


def training_format(spec: EmbeddingFinetuneSpec) -> DataFormat:
    """The format of the rows the loss sees: scored-pairs once silver labels score the pairs."""
    return DataFormat.SCORED_PAIRS if spec.training.silver_labels is not None else spec.data.train.format


def _cross_encoder_rules(t: TrainingSpec, fmt: DataFormat) -> None:
    """The rules of gpl, silver labels and their cross-encoder (the CRD's CEL rules, same messages)."""
    gpl, silver = t.method is Method.GPL, t.silver_labels is not None
    if gpl and fmt not in CROSS_ENCODER_FORMATS:
        raise SpecRuleError(
            ("training", "method"),
            f"gpl does not fit data.train.format {fmt.value}: it learns from queries and passages, so use "
            "pairs or documents",
        )
    if gpl and t.loss is not Loss.MARGIN_MSE:
        raise SpecRuleError(
            ("training", "loss"), "training.method gpl trains on cross-encoder margins: set training.loss MarginMSE"
        )
    if t.loss is Loss.MARGIN_MSE and not gpl:
        raise SpecRuleError(
            ("training", "loss"),
            "training.loss MarginMSE needs training.method gpl (its cross-encoder gives the margins)",
        )
    if silver and fmt not in CROSS_ENCODER_FORMATS:
        raise SpecRuleError(
            ("training", "silverLabels"),
            "training.silverLabels scores unlabelled (anchor, positive) pairs: use data.train.format pairs or documents",
        )
    if silver and t.method is not Method.FULL:
        raise SpecRuleError(("training", "silverLabels"), "training.silverLabels works with training.method full only")
    if (t.cross_encoder is not None) != (gpl or silver):
        raise SpecRuleError(
            ("training", "crossEncoder"),
            "training.crossEncoder is required with training.method gpl or training.silverLabels and allowed only there",
        )


def _either(names: Any) -> str:
    items = [str(n) for n in names]
    return ", ".join(items[:-1]) + " or " + items[-1] if len(items) > 1 else items[0]


class SpecRuleError(ValueError):
    """A cross-field rule failed; ``path`` is the field it is reported on (relative to spec)."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


class SpecProblem(BaseModel):
    """One problem of a spec: where (a dotted field path such as ``spec.training.loss``) and what."""

    model_config = ConfigDict(frozen=True)

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class InvalidSpec(ValueError):
    """The spec does not parse; ``problems`` lists every problem with its field path."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


def _path(prefix: str, loc: tuple[int | str, ...]) -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _is_type_tag(part):
            continue  # pydantic's union-branch tags, not field names
        else:
            out += f".{part}"
    return out


PATTERN_HINTS = {
    S3_URI_PATTERN: "must be an s3:// URI such as s3://my-bucket/path/ (lower-case bucket name)",
    MODEL_PATTERN: "must be a hub id such as sentence-transformers/all-MiniLM-L6-v2 or an s3:// URI",
    DNS_SUBDOMAIN: "must be a Kubernetes object name (lower-case a-z, 0-9, - and .)",
    DNS_LABEL: "must be a DNS label (lower-case a-z, 0-9 and -)",
    HTTP_URL: "must be an http(s) URL without user-info or @, such as https://host:443/v1 (credentials go in a Secret)",
    METRIC_PATTERN: "must be <metric>@<k> with metric ndcg, mrr, recall, map or accuracy, such as ndcg@10",
    **RETRAIN_PATTERN_HINTS,
}

_TYPE_TAG = re.compile(r"^(int|str|float|bool|constrained-str|function-after\[.*\]|list\[.*\]|dict\[.*\])$")


def _is_type_tag(part: str) -> bool:
    return bool(_TYPE_TAG.match(part))


def _problems(err: ValidationError, prefix: str) -> list[SpecProblem]:
    seen: dict[str, SpecProblem] = {}
    for e in err.errors(include_url=False):
        ctx = e.get("ctx") or {}
        rule = ctx.get("error")
        if isinstance(rule, SpecRuleError):
            path = _path(prefix, tuple(e["loc"]) + rule.path)
            msg = rule.message
        else:
            path = _path(prefix, tuple(e["loc"]))
            msg = str(e["msg"])
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            if e["type"] == "string_pattern_mismatch":
                msg = PATTERN_HINTS.get(str(ctx.get("pattern")), msg)
            if e["type"] == "extra_forbidden":
                msg = "unknown field (not in the EmbeddingFinetune schema)"
        # A union reports one error per branch; keep the first per path.
        seen.setdefault(path, SpecProblem(path=path, message=msg))
    return list(seen.values())


def parse_spec(spec: Any, *, prefix: str = "spec") -> EmbeddingFinetuneSpec:
    """Parse and check a spec (a mapping as in the resource); raise :class:`InvalidSpec` naming each field."""
    if not isinstance(spec, dict):
        raise InvalidSpec([SpecProblem(path=prefix, message=f"must be an object, not {type(spec).__name__}")])
    try:
        return EmbeddingFinetuneSpec.model_validate(spec)
    except ValidationError as err:
        raise InvalidSpec(_problems(err, prefix)) from None


class ResourceMeta(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)
    name: str | None = None
    generate_name: str | None = Field(default=None, alias="generateName")
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None

    @property
    def resolved_name(self) -> str:
        """The name, or for a ``generateName`` resource the prefix and ``xxxxx`` where the server adds 5 characters."""
        return self.name or f"{(self.generate_name or '')[:GENERATE_NAME_KEPT]}{'x' * GENERATED_SUFFIX_LENGTH}"


#: The fields of Kubernetes' ObjectMeta (the API server refuses others under strict field validation).
OBJECT_META_FIELDS = frozenset(
    {
        "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
        "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations",
        "ownerReferences", "finalizers", "managedFields",
    }
)  # fmt: skip


def _metadata_problems(meta: Any) -> list[SpecProblem]:
    """What the API server refuses in an EmbeddingFinetune's metadata (and the CRD's rule on the name's length)."""
    if not isinstance(meta, dict):
        return [SpecProblem(path="metadata", message="must be an object with a name (or generateName)")]
    problems = [
        SpecProblem(path=f"metadata.{k}", message="unknown field") for k in sorted(set(meta) - OBJECT_META_FIELDS)
    ]
    name, generate = meta.get("name"), meta.get("generateName")
    if name is None and generate is None:
        problems.append(SpecProblem(path="metadata.name", message="name or generateName is required"))
    if name is not None:
        if not isinstance(name, str) or not re.match(DNS_SUBDOMAIN, name) or len(name) > 253:
            problems.append(
                SpecProblem(path="metadata.name", message="must be a DNS subdomain name (a-z, 0-9, - and .)")
            )
        elif len(name) > NAME_MAX_LENGTH:
            problems.append(
                SpecProblem(
                    path="metadata.name",
                    message=f"must be at most {NAME_MAX_LENGTH} characters: it becomes a label value of the "
                    "run's Job and Pods",
                )
            )
    elif generate is not None:
        # The server keeps the first 58 characters and adds 5: the generated name is a valid, short name.
        candidate = (
            f"{generate[:GENERATE_NAME_KEPT]}{'a' * GENERATED_SUFFIX_LENGTH}" if isinstance(generate, str) else ""
        )
        if not re.match(DNS_SUBDOMAIN, candidate):
            problems.append(
                SpecProblem(path="metadata.generateName", message="must be the prefix of a DNS subdomain name")
            )
    for field in ("labels", "annotations"):
        value = meta.get(field)
        if value is None:
            continue
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            problems.append(SpecProblem(path=f"metadata.{field}", message="must map strings to strings"))
            continue
        try:
            _check_label_keys(value)
        except ValueError as exc:
            problems.append(SpecProblem(path=f"metadata.{field}", message=str(exc)))
        if field == "labels":
            bad = [k for k, v in value.items() if len(v) > 63 or not re.match(LABEL_VALUE, v)]
            problems.extend(
                SpecProblem(path="metadata.labels", message=f"{k}: must be a label value (at most 63 characters)")
                for k in bad
            )
    return problems


def parse_resource(doc: Any) -> tuple[ResourceMeta, EmbeddingFinetuneSpec]:
    """Parse a whole EmbeddingFinetune document (apiVersion, kind, metadata, spec)."""
    if not isinstance(doc, dict):
        raise InvalidSpec([SpecProblem(path="(document)", message="must be a mapping (a Kubernetes object)")])
    problems: list[SpecProblem] = []
    expected = f"{API_GROUP}/{API_VERSION}"
    if doc.get("apiVersion") != expected:
        problems.append(SpecProblem(path="apiVersion", message=f"must be {expected}, not {doc.get('apiVersion')!r}"))
    if doc.get("kind") != KIND:
        problems.append(SpecProblem(path="kind", message=f"must be {KIND}, not {doc.get('kind')!r}"))
    meta = doc.get("metadata")
    problems.extend(_metadata_problems(meta))
    unknown = sorted(set(doc) - {"apiVersion", "kind", "metadata", "spec", "status"})
    problems.extend(SpecProblem(path=k, message="unknown top-level field") for k in unknown)
    spec: EmbeddingFinetuneSpec | None = None
    try:
        spec = parse_spec(doc.get("spec"))
    except InvalidSpec as exc:
        problems.extend(exc.problems)
    if problems or spec is None:
        raise InvalidSpec(problems)
    assert isinstance(meta, dict)
    return ResourceMeta.model_validate(meta), spec


def dump_spec(spec: EmbeddingFinetuneSpec) -> dict[str, Any]:
    """The spec as the CRD spells it (camelCase, defaults filled in): JSON-ready."""
    return spec.model_dump(mode="json", by_alias=True, exclude_none=True)
