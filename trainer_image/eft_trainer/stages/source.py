"""Source: download the training (and evaluation) data, or generate pairs from documents (phase ``generate``).

Out: :class:`Source`: the fetched files with their URI, size and sha256 (the report's ``data.files``), and for
documents the generated pairs already read and split, with the base model generation loaded."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eft_api.contract import RunConfig
from eft_api.spec import DataFormat
from eft_trainer import data as D
from eft_trainer.generation import Generated, generate_stage
from eft_trainer.models import load_model
from eft_trainer.publish import sha256_file
from eft_trainer.stages.context import RunContext
from eft_trainer.storage import Store, base_uri, fetch


@dataclass
class Fetched:
    train_root: Path
    train_files: list[Path]
    eval_root: Path | None = None
    eval_files: list[Path] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    #: The S3 prefix each root was downloaded from (a file's URI is the prefix + its path under the root).
    train_base: str = ""
    eval_base: str = ""


@dataclass
class Prepared:
    """Rows read and checked: the format, the training rows, the evaluation rows if given, a BEIR set, counts."""

    fmt: DataFormat
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]] | None
    beir: D.Beir | None
    stats: dict[str, Any]


@dataclass
class FromDocuments:
    """Pairs generated from documents: the base model (its tokenizer chunked them) and where it came from."""

    model: Any
    source: str
    generated: Generated
    fetched: Fetched
    prepared: Prepared


@dataclass
class Source:
    fetched: Fetched
    #: Set when the training data are documents.
    documents: FromDocuments | None = None


def fetch_data(cfg: RunConfig, storage: Store, work: Path) -> Fetched:
    """Download training (and evaluation) data; record each file's URI, size and sha256."""
    spec = cfg.spec.data
    dest = work / "data" / "train"
    if dest.exists():
        shutil.rmtree(dest)
    train = fetch(storage, spec.train.uri, dest)
    out = Fetched(dest, train, train_base=base_uri(spec.train.uri))
    if spec.eval.uri:
        edest = work / "data" / "eval"
        if edest.exists():
            shutil.rmtree(edest)
        out.eval_root = edest
        out.eval_files = fetch(storage, spec.eval.uri, edest)
        out.eval_base = base_uri(spec.eval.uri)
    for root, files, base in ((dest, train, out.train_base), (out.eval_root, out.eval_files, out.eval_base)):
        for f in files:
            assert root is not None
            uri = base + f.relative_to(root).as_posix()
            out.files.append({"uri": uri, "bytes": f.stat().st_size, "sha256": sha256_file(f)})
    return out


def generate_pairs(cfg: RunConfig, storage: Store, work: Path) -> FromDocuments:
    """Format documents: the generate stage makes (or reuses) the pairs; the base model's tokenizer chunks."""
    model, source = load_model(cfg, storage, work)
    g = generate_stage(cfg, storage, work, model.tokenizer, model=model)
    fetched = Fetched(work / "documents", [], files=[g.pairs_file, *g.eval_files])
    return FromDocuments(model, source, g, fetched, Prepared(DataFormat.PAIRS, g.train, g.eval, None, g.stats))


def run(ctx: RunContext) -> Source:
    """Generated pairs (documents) are a content-addressed artifact: every rank reads or makes the same one."""
    if ctx.cfg.spec.data.train.format is DataFormat.DOCUMENTS:
        with ctx.stage("generate"):
            docs = generate_pairs(ctx.cfg, ctx.storage, ctx.own)
        return Source(docs.fetched, docs)
    with ctx.stage("fetch"):
        return Source(fetch_data(ctx.cfg, ctx.storage, ctx.own))
