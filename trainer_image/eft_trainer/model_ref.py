"""Where a model reference of the spec (a hub id or an s3:// folder) is loaded from: the base model's rule,
shared by every model the spec names (``spec.model.base``, ``spec.training.crossEncoder.model``)."""

from __future__ import annotations

import shutil
from pathlib import Path

from eft_trainer.errors import ModelNotFound, S3NotFound
from eft_trainer.storage import S3Uri, Store


def resolve_ref(ref: str, storage: Store, dest: Path, field: str, cache_dir: str | None) -> str:
    """A local folder or hub id to load ``ref`` from: an s3:// folder is downloaded to ``dest``; a hub id found
    under ``cache_dir`` (``settings.modelCacheDir``, folders ``<dir>/<org>/<name>``) is that folder."""
    if ref.startswith("s3://"):
        if dest.exists():
            shutil.rmtree(dest)
        try:
            storage.download_tree(S3Uri.parse(ref if ref.endswith("/") else ref + "/"), dest, allow_object=False)
        except S3NotFound:
            raise ModelNotFound(f"{field} {ref}: no model files under that prefix") from None
        return str(dest)
    if cache_dir and (Path(cache_dir) / ref).is_dir():
        return str(Path(cache_dir) / ref)
    return ref
