"""Loading the models a spec names (the base model, the teacher) and asking one its embedding size: one home
for both, used by the stages and the methods."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from eft_api.contract import RunConfig
from eft_api.spec import EmbeddingFinetuneSpec, ModelSpec
from eft_trainer.errors import InvalidSpecError, ModelNotFound
from eft_trainer.model_ref import resolve_ref
from eft_trainer.storage import Store

log = logging.getLogger(__name__)

#: How the base model is named in errors.
BASE_FIELD = "spec.model.base"


def embedding_dim(model: Any) -> int:
    """The model's full embedding size (sentence-transformers 6 renamed the getter; both are asked)."""
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get())


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


def resolve_model(
    cfg: RunConfig, storage: Store, work: Path, which: ModelSpec | None = None, field: str = BASE_FIELD
) -> str:
    """A local folder or hub id to load: s3:// bases are downloaded; modelCacheDir maps hub ids to folders.

    ``which`` is another model reference of the spec than spec.model (the teacher), named ``field`` in errors."""
    dest = work / ("base-model" if which is None else field)
    return resolve_ref((which or cfg.spec.model).base, storage, dest, field, cfg.settings.model_cache_dir)


def load_model(
    cfg: RunConfig, storage: Store, work: Path, which: ModelSpec | None = None, field: str = BASE_FIELD
) -> tuple[Any, str]:
    """The base model (or ``which``, named ``field``: the teacher), and where it was loaded from (a local
    folder or a hub id), for the lineage."""
    from sentence_transformers import SentenceTransformer  # heavy (torch): only a run that loads a model pays

    m = which or cfg.spec.model
    where = resolve_model(cfg, storage, work, which, field)
    t0 = time.perf_counter()
    try:
        model = SentenceTransformer(where, revision=m.revision, trust_remote_code=m.trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        offline = " (offline: HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
        raise ModelNotFound(
            f"{field} {m.base} could not be loaded{offline}: {type(exc).__name__}; check the id "
            "(org/name), the revision, or the s3:// prefix"
        ) from None
    if m.max_seq_length:
        model.max_seq_length = m.max_seq_length
    if which is None:
        check_dimensions(cfg.spec, embedding_dim(model), m.base)
    log.info("loaded model %s in %.1fs", m.base, time.perf_counter() - t0)
    return model, where
