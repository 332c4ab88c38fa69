"""What a published model was made from, for report.json and the model card: base model (id, revision, the
SHA-256 of its weight files), the effective maximum sequence length, the data settings and library versions.

Library versions come from sentence-transformers' own model-card code (``get_versions``); the base model and
its revision are set by hand on the model's ``SentenceTransformerModelCardData`` (its own lookup needs the Hub).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from eft_api.contract import RunConfig

#: Weight files whose checksums identify a base model (model.safetensors, 2_Dense/model.safetensors, ...).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx")


def model_folder(where: str, revision: str | None) -> Path | None:
    """The local folder a model was loaded from: ``where`` itself, or its snapshot in the Hugging Face cache."""
    if Path(where).is_dir():
        return Path(where)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(where, revision=revision, local_files_only=True))
    except Exception:
        return None


def weights_sha256(folder: Path | None) -> dict[str, str]:
    """SHA-256 of every weight file under ``folder`` (path relative to it -> hex digest); empty when unknown."""
    if folder is None:
        return {}
    out: dict[str, str] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix in WEIGHT_SUFFIXES and "checkpoint" not in p.parts[-2:]:
            h = hashlib.sha256()
            with p.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            out[p.relative_to(folder).as_posix()] = h.hexdigest()
    return out


def versions() -> dict[str, str]:
    """Library versions, as sentence-transformers records them in its own model cards."""
    from sentence_transformers.base.model_card import get_versions

    return {k: str(v) for k, v in get_versions().items()}


def lineage(cfg: RunConfig, model: Any, where: str) -> dict[str, Any]:
    """The lineage block of report.json's config; records the base model on the model's card data too."""
    m = cfg.spec.model
    card = getattr(model, "model_card_data", None)
    if card is not None:
        card.base_model = m.base
        card.base_model_revision = m.revision
    return {
        "baseModel": m.base,
        "baseModelRevision": m.revision,
        "baseModelWeightsSha256": weights_sha256(model_folder(where, m.revision)),
        "maxSeqLength": int(model.max_seq_length) if model.max_seq_length else None,
        "maxSeqLengthFrom": "spec.model.maxSeqLength" if m.max_seq_length else "the base model's default",
        "data": cfg.spec.data.model_dump(mode="json", by_alias=True, exclude_none=True),
        "versions": versions(),
    }
