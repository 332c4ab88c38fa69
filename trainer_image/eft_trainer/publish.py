"""Publish a run (seam 3): model/ with a model card, report.json, report.md, the plot, then manifest.json LAST.

A run whose manifest exists is never overwritten. A retried run re-publishes under the same prefix (its
objects are simply replaced, since no manifest vouched for them) after aborting stale multipart uploads.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eft_api.contract import (
    PUBLISHED_MANIFEST,
    PUBLISHED_MODEL_DIR,
    PUBLISHED_PLOT,
    PUBLISHED_REPORT_JSON,
    PUBLISHED_REPORT_MD,
)
from eft_api.report import IndexInfo, Report
from eft_trainer.errors import TrainerError
from eft_trainer.models import embedding_dim
from eft_trainer.storage import S3Uri, Store

log = logging.getLogger(__name__)

_TYPES = {".json": "application/json", ".md": "text/markdown", ".png": "image/png", ".txt": "text/plain"}


class AlreadyPublished(TrainerError):
    """The run prefix already holds a manifest: a published run is never overwritten."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def index_info(model: Any, dims: list[int], reindex_required: bool) -> IndexInfo:
    """What a consumer of the model must know to index with it (manifest, model card, report)."""
    from sentence_transformers.sentence_transformer.modules import Normalize, Router

    normalized = len(model) > 0 and isinstance(model[-1], Normalize)
    router: Any = model[-1] if len(model) > 0 and isinstance(model[-1], Router) else None
    if router is not None:
        document = list(router.sub_modules["document"])
        if document:  # two towers (queryEncoder): the document route is the base model
            normalized = isinstance(document[-1], Normalize)
        else:  # an adapter: the document route is empty, the base model's output
            normalized = len(model) > 1 and isinstance(model[-2], Normalize)
    full = embedding_dim(model)
    return IndexInfo(
        reindex_required=reindex_required,
        embedding_dimension=full,
        matryoshka_dims=[d for d in dims if d != full],
        normalized=bool(normalized),
        similarity=str(model.similarity_fn_name),
        prompts=dict(model.prompts or {}),
        default_prompt_name=model.default_prompt_name,
        max_seq_length=model.max_seq_length,
        encode="queries with encode_query, documents with encode_document",
        serving=None if router is None else serving_info(router),
    )


def serving_info(router: Any) -> dict[str, Any]:
    """What serving a query-side model costs: one encoder pass per text, or two towers (queryEncoder), and the
    size of the query side's own weights."""
    query, document = list(router.sub_modules["query"]), list(router.sub_modules["document"])
    params = sum(p.numel() for m in query for p in m.parameters())
    if document:
        return {
            "towers": 2,
            "queryTowerParameters": params,
            "documentTowerParameters": sum(p.numel() for m in document for p in m.parameters()),
            "note": "two encoders: queries through the trained query tower (encode_query), documents through "
            "the unchanged base model (encode_document); serving holds both in memory",
        }
    return {"towers": 1, "queryAdapterParameters": params}


def index_card(index: IndexInfo) -> list[str]:
    """The model card's section for an index owner."""
    if index.reindex_required:
        verdict = "**Re-index required**: document embeddings made with the base model are not valid for this model."
    else:
        verdict = (
            "**No re-index needed**: documents embed exactly as with the base model (bit for bit); only queries "
            "change (through the query adapter or query tower: use `encode_query`)."
        )
    prompts = ", ".join(f"{k}: {v!r}" for k, v in index.prompts.items()) or "none"
    return [
        "## For an index owner",
        "",
        verdict,
        "",
        f"- embedding dimension: {index.embedding_dimension}"
        + (f" (Matryoshka sizes measured: {index.matryoshka_dims})" if index.matryoshka_dims else ""),
        f"- normalised: {'yes' if index.normalized else 'no'}; similarity: {index.similarity}",
        f"- prompts: {prompts}; max sequence length: {index.max_seq_length}",
        f"- {index.encode}",
        *(
            [f"- merged with the base model at ratio {index.merge_ratio:g} (WiSE-FT; 1 is the fine-tuned model)"]
            if index.merge_ratio is not None
            else []
        ),
        *serving_card(index.serving),
        "",
    ]


def serving_card(serving: dict[str, Any] | None) -> list[str]:
    if not serving:
        return []
    if serving["towers"] == 2:
        return [
            f"- serving: two towers: a query tower of {serving['queryTowerParameters']:,} parameters beside the "
            f"unchanged document tower ({serving['documentTowerParameters']:,}); both load from this one folder"
        ]
    return [f"- serving: one encoder plus a query adapter of {serving['queryAdapterParameters']:,} parameters"]


def card_results(report: Report) -> list[str]:
    """The model card's results (the primary metric per dimension) and how to use the model."""
    h, pm, m = report.headline, report.primary_metric, report.metrics
    lines = [
        "## Results",
        "",
        f"{pm} at {report.primary_dimension} dims: base {h.base:.4f}, fine-tuned {h.finetuned:.4f} ({h.gain:+.4f}).",
        "",
        "| dim | base | fine-tuned |",
        "|---:|---:|---:|",
    ]
    lines += [
        f"| {dim} | {m.base[dim][pm]:.4f} | {m.finetuned[dim][pm]:.4f} |"
        for dim in sorted(m.base, key=int, reverse=True)
    ]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "model = SentenceTransformer('path/to/model', truncate_dim=None)  # or a Matryoshka dim",
        "```",
        "",
    ]
    return lines


def model_card(report: Report) -> str:
    """README.md of the published model: base model (revision, weight checksums), data (URIs, sha256, columns,
    evaluation split), maximum sequence length, hyperparameters, library versions, results."""
    cfg = report.config
    revision = cfg.base_model_revision
    lines = [
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: sentence-similarity",
        f"base_model: {cfg.base_model}",
        *([f"base_model_revision: {revision}"] if revision else []),
        "tags: [sentence-transformers, embeddings, matryoshka, eft]",
        "---",
        "",
        f"# {cfg.name or 'fine-tuned model'}",
        "",
        f"Fine-tuned from `{cfg.base_model}` by the EmbeddingFinetune operator (run {cfg.run_id}).",
        "",
        "## Base model",
        "",
        f"- id: `{cfg.base_model}`, revision: `{revision or 'not pinned'}`",
    ]
    lines += [f"- `{name}` sha256 `{digest}`" for name, digest in cfg.base_model_weights_sha256.items()]
    lines += [f"- maximum sequence length: {cfg.max_seq_length} tokens ({cfg.max_seq_length_from})", "", "## Data", ""]
    lines += [f"- `{f.uri}` sha256 `{f.sha256}` ({f.bytes} bytes)" for f in report.data.files]
    if cfg.data:
        lines += ["", "Data settings (columns, evaluation split):", "", "```json", json.dumps(cfg.data, indent=2)]
        lines += ["```"]
    if report.index is not None:
        lines += ["", *index_card(report.index)]
    lines += ["", "## Hyperparameters", "", "```json", json.dumps(cfg.training, indent=2), "```", ""]
    if cfg.versions:
        lines += ["## Library versions", ""]
        lines += [f"- {name}: {version}" for name, version in cfg.versions.items()]
        lines += [""]
    lines += card_results(report)
    return "\n".join(lines)


#: Further plots of the report, when it has their sections: the baselines' leaderboard and the merge curve.
EXTRA_PLOTS = ("leaderboard.png", "merge.png")


def manifest_exists(storage: Store, prefix: S3Uri) -> bool:
    return storage.exists(prefix.join(PUBLISHED_MANIFEST))


def publish(
    storage: Store,
    prefix: S3Uri,
    model_dir: Path,
    write_report: Callable[[], Path],
    run_id: str,
    extra_dirs: dict[str, Path] | None = None,
    index: IndexInfo | None = None,
) -> dict[str, Any]:
    """Upload the model (and ``extra_dirs``: further published folders such as ``adapter/``), then the report
    (``write_report`` writes it once the model is up, so its timings include the model's upload; it returns
    the report folder), then the manifest (key, size, sha256; and ``index``, what an index owner must know,
    :func:`index_info`) last. Returns the manifest."""
    if manifest_exists(storage, prefix):
        raise AlreadyPublished(f"{prefix.join(PUBLISHED_MANIFEST)} exists: a published run is never overwritten")
    aborted = storage.abort_multipart_uploads(prefix)
    if aborted:
        log.info("aborted %d stale multipart upload(s) under %s", aborted, prefix)
    objects: list[dict[str, Any]] = []
    model_files: list[tuple[Path, str]] = [
        (p, PUBLISHED_MODEL_DIR + p.relative_to(model_dir).as_posix())
        for p in sorted(model_dir.rglob("*"))
        if p.is_file()
    ]
    for name, folder in (extra_dirs or {}).items():
        model_files += [(p, name + p.relative_to(folder).as_posix()) for p in sorted(folder.rglob("*")) if p.is_file()]
    objects += _upload(storage, prefix, model_files)
    report_dir = write_report()
    report_files = [
        (report_dir / name, name)
        for name in (PUBLISHED_REPORT_JSON, PUBLISHED_REPORT_MD, PUBLISHED_PLOT, *EXTRA_PLOTS)
        if (report_dir / name).is_file()
    ]
    objects += _upload(storage, prefix, report_files)
    manifest: dict[str, Any] = {"runId": run_id, "prefix": str(prefix), "objects": objects}
    if index is not None:
        manifest["index"] = index.model_dump(mode="json", by_alias=True, exclude_unset=True)  # as report.json has it
    storage.put_bytes(json.dumps(manifest, indent=2).encode(), prefix.join(PUBLISHED_MANIFEST))
    log.info("published %d objects and the manifest under %s", len(objects), prefix)
    return manifest


def _upload(storage: Store, prefix: S3Uri, files: list[tuple[Path, str]]) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for path, rel in files:
        storage.upload(path, prefix.join(rel), _TYPES.get(path.suffix))
        objects.append({"key": rel, "size": path.stat().st_size, "sha256": sha256_file(path)})
    return objects
