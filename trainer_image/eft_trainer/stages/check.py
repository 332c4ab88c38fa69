"""Check: read and check every row (file and line on failure), drop duplicates, split or load the evaluation
set (leaked queries removed from training), fetch the guard sets; then load the base model.

In: :class:`~eft_trainer.stages.source.Source`. Out: :class:`Checked` (the training rows, the evaluation set,
the guard sets, the report's ``data`` counts) and :class:`BaseModel`."""

from __future__ import annotations

import logging
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eft_api.contract import RunConfig
from eft_api.spec import DataFormat
from eft_trainer import data as D
from eft_trainer.errors import InvalidCorpus
from eft_trainer.guards import GuardSet, load_guard
from eft_trainer.lineage import lineage
from eft_trainer.models import load_model
from eft_trainer.publish import sha256_file
from eft_trainer.report import camel_keys
from eft_trainer.stages.context import RunContext
from eft_trainer.stages.source import Fetched, Prepared, Source
from eft_trainer.storage import Store, base_uri, fetch

log = logging.getLogger("eft_trainer")

#: How the evaluation data is named in errors, and the field whose column mapping it is read with.
EVAL_DATA = "the evaluation data (spec.data.eval.uri)"
EVAL_COLUMNS = "spec.data.train.columns (the evaluation data is read with the training data's columns)"


@dataclass
class Checked:
    train: list[dict[str, Any]]
    irset: D.IRSet
    #: The report's ``data`` section: counts, and ``files`` (URI, size, sha256 of every file read).
    stats: dict[str, Any]
    guard_sets: list[GuardSet]


@dataclass
class BaseModel:
    model: Any
    #: The report's lineage (``config``): base weights, effective settings, library versions.
    lineage: dict[str, Any]


def _prefixed(side: str, stats: D.CleanStats) -> dict[str, Any]:
    """``CleanStats`` as report keys: ``trainRowsRead``, ``evalDuplicatesDropped``, ..."""
    return {f"{side}{k[0].upper()}{k[1:]}": v for k, v in camel_keys(asdict(stats)).items()}


def load_and_check(cfg: RunConfig, fetched: Fetched) -> Prepared:
    """Read, map columns, check every row (file and line on failure), drop duplicates (counted)."""
    tr = cfg.spec.data.train
    fmt = tr.format
    if fmt is DataFormat.BEIR:
        beir = D.read_beir(fetched.train_root)
        return Prepared(fmt, [], None, beir, {"corpus": len(beir.corpus), "queries": len(beir.queries)})
    rows = D.read_files(fetched.train_files, tr.file_type, fetched.train_root, base_uri=fetched.train_base)
    records, stats = D.drop_duplicates(D.map_and_check(rows, fmt, tr.columns), fmt)
    counts = _prefixed("train", stats)
    ev = None
    if fetched.eval_files:
        erows = D.read_files(
            fetched.eval_files, tr.file_type, fetched.eval_root, base_uri=fetched.eval_base, what=EVAL_DATA
        )
        ev, estats = D.drop_duplicates(
            D.map_and_check(erows, fmt, tr.columns, what=EVAL_DATA, columns_field=EVAL_COLUMNS), fmt
        )
        counts.update(_prefixed("eval", estats))
    if not records:
        raise InvalidCorpus(
            "no training rows are left after dropping duplicates and pairs whose positive equals the anchor"
        )
    return Prepared(fmt, records, ev, None, counts)


def _beir_split(cfg: RunConfig, b: D.Beir, stats: dict[str, Any]) -> tuple[list[dict[str, Any]], D.IRSet]:
    """BEIR: the test qrels (or a held-out share of the train qrels) evaluate; the rest trains."""
    ev_spec = cfg.spec.data.eval
    if b.test_qrels:
        eval_qrels = b.test_qrels
        train_qrels = {q: d for q, d in b.train_qrels.items() if q not in eval_qrels}
    else:
        qids = sorted(b.train_qrels)
        random.Random(ev_spec.seed).shuffle(qids)
        n = max(1, round(ev_spec.held_out_fraction * len(qids)))
        eval_qrels = {q: b.train_qrels[q] for q in qids[:n]}
        train_qrels = {q: b.train_qrels[q] for q in qids[n:]}
    stats["leakedQueriesRemoved"] = len(b.train_qrels) - len(train_qrels) if b.test_qrels else 0
    train, cs = D.drop_duplicates(D.beir_pairs(b, train_qrels), DataFormat.BEIR)
    stats.update({"trainDuplicatesDropped": cs.duplicates_dropped, "trainSameTextDropped": cs.same_text_dropped})
    return train, D.ir_from_beir(b.corpus, b.queries, eval_qrels, ev_spec)


def _rows_split(cfg: RunConfig, prep: Prepared, stats: dict[str, Any]) -> tuple[list[dict[str, Any]], D.IRSet]:
    """Rows: the given evaluation rows (or a held-out share) evaluate; rows that leak into them are removed."""
    ev_spec = cfg.spec.data.eval
    fmt = prep.fmt
    if prep.eval is not None:
        train, ev = prep.train, prep.eval
    else:
        train, ev = D.split_held_out(prep.train, fmt, ev_spec.held_out_fraction, ev_spec.seed)
    before = train
    train, leaked = D.remove_leakage(train, ev, fmt)
    stats["leakedRowsRemoved"] = leaked
    if fmt is DataFormat.LABELED_TEXTS:
        irset = D.ir_from_labeled(ev)
    elif fmt is DataFormat.SCORED_PAIRS:
        irset = D.ir_from_scored(ev, train, ev_spec)
    else:
        irset = D.ir_from_pairs(ev, train, ev_spec, negatives=fmt is DataFormat.TRIPLETS)
        # The positives of leaked rows answer an evaluation query: never distractors (counted here).
        kept = {id(r) for r in train}
        in_corpus = set(irset.corpus.values())
        left_out = {r["positive"] for r in before if id(r) not in kept} - in_corpus
        stats["leakedPositivesLeftOut"] = len(left_out)
    stats["evalRows"] = len(ev)
    return train, irset


def build_evaluation(cfg: RunConfig, prep: Prepared) -> tuple[list[dict[str, Any]], D.IRSet, dict[str, Any]]:
    """Split or load the evaluation set; remove leaked queries from training; build queries/corpus/relevant."""
    stats = dict(prep.stats)
    if prep.fmt is DataFormat.BEIR:
        assert prep.beir is not None
        train, irset = _beir_split(cfg, prep.beir, stats)
    else:
        train, irset = _rows_split(cfg, prep, stats)
    if not irset.queries:
        raise InvalidCorpus("the evaluation split has no query with a relevant document: add data or an eval set")
    if not train:
        raise InvalidCorpus("no training rows are left after holding out the evaluation split")
    stats["trainRows"] = len(train)
    stats.update({f"eval{k[0].upper()}{k[1:]}": v for k, v in irset.stats().items()})
    return train, irset, stats


def fetch_guards(cfg: RunConfig, storage: Store, work: Path, fetched: Fetched) -> list[GuardSet]:
    """Download each guard set (``spec.evaluation.guards``) and read and check it (GuardSet per guard)."""
    out = []
    for i, guard in enumerate(cfg.spec.evaluation.guards):
        dest = work / "data" / "guards" / guard.name
        if dest.exists():
            shutil.rmtree(dest)
        uri = guard.uri if guard.format is not DataFormat.BEIR else guard.uri.rstrip("/") + "/"
        files = fetch(storage, uri, dest)
        for f in files:
            rel = f.relative_to(dest).as_posix()
            entry = {"uri": base_uri(uri) + rel, "bytes": f.stat().st_size, "sha256": sha256_file(f)}
            fetched.files.append({**entry, "guard": guard.name})
        out.append(load_guard(guard, i, dest, files, cfg.spec.data.eval))
    return out


def run(ctx: RunContext, src: Source) -> Checked:
    with ctx.stage("check"):
        prep = src.documents.prepared if src.documents else load_and_check(ctx.cfg, src.fetched)
        train, irset, stats = build_evaluation(ctx.cfg, prep)
        guard_sets = fetch_guards(ctx.cfg, ctx.storage, ctx.own, src.fetched) if ctx.world.main else []
        stats["files"] = src.fetched.files
    log.info("data: %s", {k: v for k, v in stats.items() if k != "files"})
    return Checked(train, irset, stats, guard_sets)


def load_base(ctx: RunContext, src: Source) -> BaseModel:
    """The base model (already loaded when pairs were generated from documents) and its lineage."""
    with ctx.timed("loadModel"):
        docs = src.documents
        model, where = (docs.model, docs.source) if docs else load_model(ctx.cfg, ctx.storage, ctx.own)
    return BaseModel(model, lineage(ctx.cfg, model, where))
