"""Embeddings of a frozen model kept with the run's checkpoints, so that a retried pod does not embed again.

The methods whose expensive part is one forward pass of a frozen model over the training texts (the
teacher's targets of ``distillation``, the base model's query and document embeddings of ``queryAdapter``)
keep the result as ``<run prefix>/checkpoints/<name>/<key>.npy``; the key hashes what produced it (the
model reference and every text, in order), so a changed input never reads a stale array.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from eft_trainer.storage import S3Uri, Store


def cache_key(reference: Sequence[Any], texts: Sequence[str]) -> str:
    """What names a cached array: the model reference (any JSON-able parts) and every text, in order. Pure."""
    h = hashlib.sha256(json.dumps(list(reference)).encode())
    for t in texts:
        h.update(b"\0" + t.encode())
    return h.hexdigest()[:32]


def cached_embeddings(
    encode: Callable[[list[str]], Any],
    texts: Sequence[str],
    key: str,
    name: str,
    own: Path,
    storage: Store,
    prefix: S3Uri | None,
    publish: bool,
) -> tuple[np.ndarray, bool]:
    """One row per text (``encode`` runs once over the distinct texts), and whether it came from the cache:
    the local work dir first, then ``<prefix>/<name>/<key>.npy``; a new array is written to both
    (to S3 only when ``publish``: the first process of a run)."""

    local = own / name / f"{key}.npy"
    remote = prefix.join(f"{name}/{key}.npy") if prefix is not None else None
    if local.is_file():
        return np.load(local), True
    if remote is not None and storage.exists(remote):
        arr = np.load(io.BytesIO(storage.get_bytes(remote)))
        local.parent.mkdir(parents=True, exist_ok=True)
        np.save(local, arr)
        return arr, True
    unique = sorted(set(texts))
    emb = np.asarray(encode(unique), dtype=np.float32)
    index = {t: i for i, t in enumerate(unique)}
    arr = emb[[index[t] for t in texts]]
    local.parent.mkdir(parents=True, exist_ok=True)
    np.save(local, arr)
    if remote is not None and publish:
        storage.upload(local, remote)
    return arr, False
