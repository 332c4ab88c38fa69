"""``method: distillation``: the student (spec.model) learns the embeddings of a teacher (spec.training.teacher).

The recipe of sentence-transformers' model-distillation and multilingual examples: the teacher embeds the
training texts ONCE, and the student trains with ``MSELoss`` to reproduce those embeddings, through the same
:func:`eft_trainer.training.train` path as the full method (checkpoints, resume after SIGTERM, DDP).

* The training texts are the distinct texts of the rows (anchors, positives, negatives, both texts of a
  scored pair, the texts of labeled-texts); each text's target is the teacher's embedding of the same text.
* Format parallel (source, translation): the teacher embeds the source only, and both the source and its
  translation get that embedding as their target, so the student maps a translation where the teacher maps
  the source (the multilingual-distillation recipe).
* A teacher wider than the student needs ``teacher.projection: pca``: its embeddings of the training
  texts are reduced to the student's dimension by PCA fitted on them (as sentence-transformers'
  model-distillation example does), so the student keeps its own dimension (index size, speed, and a
  headline comparable with the base model). The reduced targets are re-normalised when the student
  normalises its output. A teacher of another dimension without a projection, or a narrower one, is refused
  naming spec.training.teacher. A trainable projection on the student side was not chosen: kept on the loss
  (``MSELoss(projection_dim=...)``) it is not in the Trainer's checkpoints, so a resumed run would restart it;
  kept in the model it changes the published dimension.
* The teacher embeddings are cached under the run's checkpoint prefix (and the work dir), keyed by the
  teacher and the texts: a retried pod resumes without embedding again.

The teacher is handed back (:attr:`Trained.reference`) so that the entrypoint measures it on the same
evaluation as the base model and the student.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eft_api.spec import DataFormat, TeacherSpec
from eft_trainer import embedding_cache
from eft_trainer.errors import InvalidCorpus, InvalidSpecError
from eft_trainer.methods import Trained, TrainInput
from eft_trainer.methods.full import checkpoint_prefix, train_all_weights
from eft_trainer.models import embedding_dim, load_model
from eft_trainer.storage import S3Uri

log = logging.getLogger(__name__)

TEACHER_FIELD = "spec.training.teacher"
#: The canonical text columns of the rows of each format (see :mod:`eft_trainer.data`), in order.
_TEXT_KEYS = ("anchor", "positive", "sentence1", "sentence2", "text")


def _text_keys(row: dict[str, Any]) -> list[str]:
    negatives = sorted((k for k in row if k.startswith("negative_")), key=lambda k: int(k.split("_")[1]))
    return [k for k in _TEXT_KEYS if k in row] + negatives


def distillation_texts(rows: Sequence[dict[str, Any]], fmt: DataFormat) -> tuple[list[str], list[str]]:
    """The distinct training texts and, for each, the text whose teacher embedding is its target. Pure.

    Every format: each text is its own target. parallel: the source (``anchor``) is the target of itself and
    of its translation (``positive``). A text seen twice keeps its first target."""
    targets: dict[str, str] = {}
    for row in rows:
        for key in _text_keys(row):
            text = row[key]
            if not isinstance(text, str) or not text.strip():
                continue
            target = row["anchor"] if fmt is DataFormat.PARALLEL else text
            targets.setdefault(text, target)
    texts = list(targets)
    return texts, [targets[t] for t in texts]


def projection_needed(teacher_dim: int, student_dim: int, teacher: TeacherSpec) -> bool:
    """Whether to reduce the teacher's embeddings by PCA; refuse a teacher that cannot fit the student. Pure."""
    if teacher_dim == student_dim:
        return False
    if teacher.projection == "pca" and teacher_dim > student_dim:
        return True
    if teacher.projection == "pca":
        raise InvalidSpecError(
            f"{TEACHER_FIELD}: the teacher {teacher.base} gives {teacher_dim}-dim embeddings, fewer than the "
            f"{student_dim} of the student (spec.model.base): PCA can only reduce; pick a teacher of at least "
            f"{student_dim} dims"
        )
    raise InvalidSpecError(
        f"{TEACHER_FIELD}: the teacher {teacher.base} gives {teacher_dim}-dim embeddings and the student "
        f"(spec.model.base) {student_dim}; set {TEACHER_FIELD}.projection pca to reduce a wider teacher's "
        f"embeddings to {student_dim} dims, or pick a teacher of {student_dim} dims"
    )


def pca_reduce(embeddings: np.ndarray, dim: int, normalize: bool) -> np.ndarray:
    """``embeddings`` (one row per text) projected on their first ``dim`` principal components, as the
    sentence-transformers recipe does (components of the centred data, applied to the raw embeddings; the
    sign of each component fixed so that its largest coefficient is positive, for a deterministic result);
    rows re-normalised when ``normalize``. Pure."""
    n = embeddings.shape[0]
    if n < dim:
        raise InvalidCorpus(
            f"{TEACHER_FIELD}.projection pca: {n} distinct training texts cannot fit {dim} principal components "
            f"(the student's dimension); add data or pick a teacher of {dim} dims"
        )
    x = embeddings.astype(np.float64)
    _, _, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    comps = vt[:dim]
    signs = np.sign(comps[np.arange(dim), np.abs(comps).argmax(axis=1)])
    comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
    out = x @ comps.T
    if normalize:
        out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    result: np.ndarray = out.astype(np.float32)
    return result


def cache_key(teacher: TeacherSpec, targets: Sequence[str]) -> str:
    """What names the cached teacher embeddings: the teacher reference and every target text. Pure."""
    return embedding_cache.cache_key([teacher.base, teacher.revision, teacher.max_seq_length], targets)


class Distillation:
    """The whole student trains to reproduce the teacher's embeddings (MSE); every index must be rebuilt."""

    name = "distillation"
    reindex_required = True

    def train(self, inp: TrainInput) -> Trained:
        import datasets

        cfg = inp.cfg
        spec = cfg.spec
        teacher_spec = spec.training.teacher
        assert teacher_spec is not None  # the spec's rules require a teacher with method distillation
        # The processes of a pod share the work dir: each downloads the teacher into (and caches in) its own.
        own = inp.own
        teacher, _ = load_model(cfg, inp.storage, own, teacher_spec, f"{TEACHER_FIELD}.base")
        teacher_dim, student_dim = embedding_dim(teacher), embedding_dim(inp.model)
        project = projection_needed(teacher_dim, student_dim, teacher_spec)

        texts, targets = distillation_texts(inp.train, spec.data.train.format)
        prefix = checkpoint_prefix(inp)
        t0 = time.perf_counter()
        labels, cached = _teacher_embeddings(teacher, teacher_spec, targets, inp, own, prefix)
        embed_seconds = time.perf_counter() - t0
        log.info(
            "teacher %s: %d-dim targets for %d texts (%s) in %.1fs",
            teacher_spec.base,
            teacher_dim,
            len(texts),
            "cached" if cached else "embedded",
            embed_seconds,
        )
        if project:
            from eft_trainer.methods.query_adapter import ends_normalized

            # Fitted on each distinct target once (a parallel source is the target of two texts).
            unique, inverse = np.unique(labels, axis=0, return_inverse=True)
            labels = pca_reduce(unique, student_dim, ends_normalized(inp.model))[inverse.reshape(-1)]
            log.info("reduced the teacher's targets by PCA: %d -> %d dims", teacher_dim, student_dim)
        ds = datasets.Dataset.from_dict({"text": texts, "label": [row.tolist() for row in labels]})
        stats = train_all_weights(inp, ds)
        details = {
            "method": self.name,
            "teacher": teacher_spec.base,
            "teacherDimension": teacher_dim,
            "studentDimension": student_dim,
            "projection": "pca" if project else "none",
            "textsDistilled": len(texts),
            "teacherTextsEmbedded": len(set(targets)),
            "teacherEmbeddingsCached": cached,
            "teacherEmbedSeconds": embed_seconds,
        }
        return Trained(inp.model, stats, details, reference=teacher)

    def save_extras(self, trained: Any, out: Path) -> list[str]:
        return []


def _teacher_embeddings(
    teacher: Any, spec: TeacherSpec, targets: Sequence[str], inp: TrainInput, own: Path, prefix: S3Uri | None
) -> tuple[np.ndarray, bool]:
    """The teacher's embedding of each target (one row per target), from the cache when it holds them."""
    bs = inp.cfg.spec.evaluation.batch_size

    def encode(texts: list[str]) -> Any:
        return teacher.encode(texts, batch_size=bs, convert_to_numpy=True, show_progress_bar=False)

    main = inp.world is None or inp.world.main
    key = cache_key(spec, targets)
    return embedding_cache.cached_embeddings(encode, targets, key, "teacher-embeddings", own, inp.storage, prefix, main)
