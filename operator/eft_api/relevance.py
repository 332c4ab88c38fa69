"""Which spec fields decide the trained weights, and the training digest over them (re-gating without retraining).

A new generation whose training digest equals an earlier finished run's reuses that run's trained model: it
re-measures and re-gates only (evaluation, gate, guards, baselines, merge, output or scheduling changed).
:data:`TRAINING_RELEVANT` classifies every field of the spec by the longest declared path that is a prefix
of it; ``tests/api/test_relevance.py`` proves that every top-level field is declared and every declared
path exists, so a new field is classified on purpose. When in doubt a field is relevant: a needless
retraining costs time, a wrong reuse gives a wrong model.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from eft_api.spec import EmbeddingFinetuneSpec

#: Dotted camelCase paths (as in the CRD) -> whether a change there changes the trained weights.
TRAINING_RELEVANT: dict[str, bool] = {
    "model": True,
    "data": True,
    # Only the evaluation set's distractors; its uri and heldOutFraction decide what is trained on.
    "data.eval.maxDistractors": False,
    "training": True,
    # Merging happens after training, on the trained weights: a new ratio needs no new training.
    "training.merge": False,
    "evaluation": False,
    "output": False,
    # The data's store: another endpoint may serve other data under the same URIs.
    "storage": False,
    "storage.endpoint": True,
    "storage.region": True,
    "storage.pathStyle": False,
    # Processes and GPUs change the batches each step sees; the rest only how fast.
    "resources": False,
    "resources.gpus": True,
    "resources.nodes": True,
    "scheduling": False,
    # Another trainer image is other code.
    "image": True,
    "runPolicy": False,
    # When to train again and whom to tell: a retrain trigger itself never reuses a trained model (the
    # operator trains on every schedule, data change or manual trigger), and an edit of these starts no run.
    "retrain": False,
    "notify": False,
}


def is_relevant(path: str) -> bool:
    """The classification of a dotted field path (list indices left out): its longest declared prefix's."""
    parts = path.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in TRAINING_RELEVANT:
            return TRAINING_RELEVANT[key]
    raise KeyError(f"spec field {path} is not classified in eft_api.relevance.TRAINING_RELEVANT")


def leaves(doc: Any, path: str = "") -> dict[str, Any]:
    """Every leaf of a dumped spec by its dotted path (a list is a leaf: nothing inside one is classified apart)."""
    if not isinstance(doc, dict):
        return {path: doc}
    out: dict[str, Any] = {}
    for k, v in doc.items():
        out.update(leaves(v, f"{path}.{k}" if path else k))
    return out


def training_digest(spec: EmbeddingFinetuneSpec) -> str:
    """A hash of the training-relevant fields set away from their defaults (as the run id's spec digest)."""
    doc = spec.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True)
    relevant = {p: v for p, v in leaves(doc).items() if is_relevant(p)}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]
