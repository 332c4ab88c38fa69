"""The cross-encoder of ``method: gpl`` (margins) and of ``training.silverLabels`` (scores).

``spec.training.crossEncoder.model`` is a hub id or an s3:// folder, resolved as the base model is
(:mod:`eft_trainer.model_ref`). Before loading, its ``config.json`` must declare a
``...ForSequenceClassification`` architecture with one output: sentence-transformers' ``CrossEncoder`` would
otherwise "convert" an embedding model by bolting a random head on it, and every label would be noise.

Labelling is the expensive part of both methods, so the labelled rows are kept beside the run's checkpoints
(``<run prefix>/checkpoints/<name>.json``): a pod retried after SIGTERM reuses them instead of mining and
scoring again, and resumes training on exactly the rows its checkpoint was trained on.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from eft_api.contract import CHECKPOINTS_DIR, RunConfig
from eft_api.spec import CrossEncoderSpec
from eft_trainer.errors import InvalidSpecError, ModelNotFound
from eft_trainer.model_ref import resolve_ref
from eft_trainer.storage import S3Uri, Store

log = logging.getLogger(__name__)

FIELD = "spec.training.crossEncoder.model"

Pair = tuple[str, str]


def config_problem(config: dict[str, Any]) -> str | None:
    """Why a model's ``config.json`` is not a cross-encoder with one output, or None if it is. Pure."""
    archs = [str(a) for a in config.get("architectures") or []]
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        declared = ", ".join(archs) or "no architecture"
        return (
            f"its config.json declares {declared}, not a ...ForSequenceClassification model: an embedding model "
            "cannot score (query, passage) pairs"
        )
    labels = len(config.get("id2label") or {}) or int(config.get("num_labels", 2))
    if labels != 1:
        return f"it has {labels} outputs; a relevance score needs a cross-encoder with one (num_labels=1)"
    return None


def read_config(where: str, revision: str | None) -> dict[str, Any]:
    """The model's config.json: from the folder, or from the hub (its cache, offline)."""
    local = Path(where)
    if local.is_dir():
        path = local / "config.json"
        if not path.is_file():
            raise InvalidSpecError(f"{FIELD}: {where} has no config.json, so it is not a cross-encoder")
    else:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(where, "config.json", revision=revision))
        except Exception as exc:  # the hub's errors: not found, offline and not cached, gated, ...
            raise ModelNotFound(f"{FIELD} {where} could not be loaded: {type(exc).__name__}") from None
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def load(cfg: RunConfig, storage: Store, work: Path) -> tuple[Any, str]:
    """The checked CrossEncoder of the spec, and where it was loaded from."""
    from sentence_transformers import CrossEncoder  # heavy: torch

    spec = cfg.spec.training.cross_encoder
    assert spec is not None
    where = resolve_ref(spec.model, storage, work / "cross-encoder", FIELD, cfg.settings.model_cache_dir)
    problem = config_problem(read_config(where, spec.revision))
    if problem:
        raise InvalidSpecError(f"{FIELD} {spec.model} is not a cross-encoder: {problem}")
    t0 = time.perf_counter()
    try:
        model = CrossEncoder(where, revision=spec.revision, max_length=spec.max_length)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelNotFound(f"{FIELD} {spec.model} could not be loaded: {type(exc).__name__}") from None
    log.info("loaded cross-encoder %s in %.1fs", spec.model, time.perf_counter() - t0)
    return model, where


def score(model: Any, pairs: Sequence[Pair], spec: CrossEncoderSpec, *, logits: bool) -> dict[Pair, float]:
    """The cross-encoder's score of each distinct pair: raw logits (``logits``, GPL's margins) or the model's
    own activation (a sigmoid for one output: silver labels in [0, 1])."""
    import torch

    unique = list(dict.fromkeys(pairs))
    if not unique:
        return {}
    with torch.no_grad():
        out = model.predict(
            unique,
            batch_size=spec.batch_size,
            show_progress_bar=False,
            activation_fn=torch.nn.Identity() if logits else None,
            convert_to_numpy=True,
        )
    return {p: float(s) for p, s in zip(unique, out.reshape(-1).tolist(), strict=True)}


def score_stats(scores: Sequence[float]) -> dict[str, float | int]:
    """Count, mean, standard deviation, min, median and max of ``scores`` (for the report). Pure."""
    if not scores:
        return {"count": 0}
    return {
        "count": len(scores),
        "mean": statistics.fmean(scores),
        "std": statistics.pstdev(scores) if len(scores) > 1 else 0.0,
        "min": min(scores),
        "median": statistics.median(scores),
        "max": max(scores),
    }


def finite(scores: dict[Pair, float]) -> None:
    """A cross-encoder that gives NaN or infinite scores cannot label anything: stop with the field named."""
    bad = sum(1 for s in scores.values() if not math.isfinite(s))
    if bad:
        raise InvalidSpecError(f"{FIELD}: the cross-encoder gave {bad} non-finite scores of {len(scores)}")


Labelled = tuple[list[dict[str, Any]], dict[str, Any]]


def cached(cfg: RunConfig, storage: Store, name: str, compute: Callable[[], Labelled]) -> Labelled:
    """``compute()``'s rows and statistics, kept at ``<run prefix>/checkpoints/<name>.json`` for a retried pod
    (reused rows say ``reused: True`` in their statistics)."""
    uri = S3Uri.parse(cfg.run.output_prefix).join(CHECKPOINTS_DIR).join(f"{name}.json")
    if storage.exists(uri):
        doc = json.loads(storage.get_bytes(uri))
        log.info("reused the %d labelled rows of %s kept at %s", len(doc["rows"]), name, uri)
        return doc["rows"], {**doc["stats"], "reused": True}
    rows, stats = compute()
    storage.put_bytes(json.dumps({"rows": rows, "stats": stats}).encode(), uri)
    return rows, {**stats, "reused": False}
