"""The trainer's entrypoint: from a corpus in S3 to a published, measured embedding model.

Inputs (all optional except the run config):

* ``EFT_RUN_CONFIG``: path of the run config JSON (default ``/etc/eft/run-config.json``), seam 2.
* ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``: S3 credentials (from the
  spec's credentialsSecret); or files of those names in ``EFT_S3_CREDENTIALS_DIR``.
* ``EFT_TERMINATION_LOG``: where to write the termination message (default ``/dev/termination-log``).
* ``EFT_DATA_ROOT``: development only: read ``s3://bucket/key`` data from ``$EFT_DATA_ROOT/bucket/key``.
* ``HF_HUB_OFFLINE=1``: load hub models from the local cache only (``settings.modelCacheDir`` maps hub ids
  to folders ``<dir>/<org>/<name>``).

Steps, each an importable function: :func:`fetch_data`, :func:`load_and_check`, :func:`build_evaluation`,
:func:`load_model`, :func:`evaluate` (base), :func:`mine_negatives`, :func:`silver_labels`, ``pretrain_stage``
(``training.pretrain`` only, :mod:`eft_trainer.pretrain`), :func:`train_model`, :func:`evaluate` (fine-tuned),
:func:`publish_run`, then :func:`finish` writes the termination message; the exit code is
the class of the outcome (``eft_api.contract.ExitCode``).
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eft_api.contract import (
    EXIT_CODE_OF_REASON,
    PUBLISHED_ADAPTER_DIR,
    PUBLISHED_MANIFEST,
    PUBLISHED_MODEL_DIR,
    PUBLISHED_PLOT,
    PUBLISHED_REPORT_JSON,
    PUBLISHED_REPORT_MD,
    TERMINATION_LOG,
    TERMINATION_LOG_ENV,
    Artifacts,
    ExitCode,
    Headline,
    IndexSummary,
    OomFallback,
    Reason,
    RunConfig,
    TerminationMessage,
)
from eft_api.spec import MINABLE_FORMATS, DataFormat, ModelSpec
from eft_trainer import data as D
from eft_trainer import distributed as dist
from eft_trainer import methods, registry
from eft_trainer.distributed import World
from eft_trainer.errors import (
    InvalidCorpus,
    ModelNotFound,
    OutOfMemory,
    S3NotFound,
    TrainerError,
    redact,
)
from eft_trainer.storage import S3Uri, Storage
from eft_trainer.training import check_dimensions

log = logging.getLogger("eft_trainer")

TERMINATION_ENV = TERMINATION_LOG_ENV  # the name eft run imports
DATA_ROOT_ENV = "EFT_DATA_ROOT"


class _Redact(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True


def setup_logging() -> None:
    root = logging.getLogger()
    if not any(isinstance(f, _Redact) for h in root.handlers for f in h.filters):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(_Redact())
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    for noisy in ("botocore", "boto3", "s3transfer", "urllib3", "httpx", "datasets", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# ---------------------------------------------------------------- steps


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


def base_uri(uri: str) -> str:
    """The prefix whose objects a data URI names: the URI itself for a prefix, its folder for an object."""
    return uri if uri.endswith("/") else uri.rsplit("/", 1)[0] + "/"


def _fetch(storage: Storage | None, uri: str, dest: Path) -> list[Path]:
    root = os.environ.get(DATA_ROOT_ENV)
    if root:
        loc = S3Uri.parse(uri)
        src = Path(root) / loc.bucket / loc.key
        if src.is_file():
            dest.mkdir(parents=True, exist_ok=True)
            return [Path(shutil.copy(src, dest / src.name))]
        if src.is_dir():
            shutil.copytree(src, dest, dirs_exist_ok=True)
            return sorted(p for p in dest.rglob("*") if p.is_file())
        raise S3NotFound(f"{uri}: nothing at {src} ({DATA_ROOT_ENV} is set)")
    assert storage is not None
    return storage.download_tree(S3Uri.parse(uri), dest)


def fetch_data(cfg: RunConfig, storage: Storage | None, work: Path) -> Fetched:
    """Download training (and evaluation) data; record each file's URI, size and sha256."""
    from eft_trainer.publish import sha256_file

    spec = cfg.spec.data
    dest = work / "data" / "train"
    if dest.exists():
        shutil.rmtree(dest)
    train = _fetch(storage, spec.train.uri, dest)
    out = Fetched(dest, train, train_base=base_uri(spec.train.uri))
    if spec.eval.uri:
        edest = work / "data" / "eval"
        if edest.exists():
            shutil.rmtree(edest)
        out.eval_root = edest
        out.eval_files = _fetch(storage, spec.eval.uri, edest)
        out.eval_base = base_uri(spec.eval.uri)
    for root, files, base in ((dest, train, out.train_base), (out.eval_root, out.eval_files, out.eval_base)):
        for f in files:
            assert root is not None
            uri = base + f.relative_to(root).as_posix()
            out.files.append({"uri": uri, "bytes": f.stat().st_size, "sha256": sha256_file(f)})
    return out


#: How the evaluation data is named in errors, and the field whose column mapping it is read with.
EVAL_DATA = "the evaluation data (spec.data.eval.uri)"
EVAL_COLUMNS = "spec.data.train.columns (the evaluation data is read with the training data's columns)"


@dataclass
class Prepared:
    fmt: DataFormat
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]] | None
    beir: D.Beir | None
    stats: dict[str, Any]


@dataclass
class FromDocuments:
    model: Any
    source: str
    generated: Any  # eft_trainer.generation.Generated
    fetched: Fetched
    prepared: Prepared


def generate_pairs(cfg: RunConfig, storage: Storage | None, work: Path) -> FromDocuments:
    """Format documents: the generate stage makes (or reuses) the pairs; the base model's tokenizer chunks."""
    from eft_trainer.generation import generate_stage

    model, source = load_model(cfg, storage, work)
    g = generate_stage(cfg, storage, work, model.tokenizer, _fetch, model=model)
    fetched = Fetched(work / "documents", [], files=[g.pairs_file, *g.eval_files])
    return FromDocuments(model, source, g, fetched, Prepared(DataFormat.PAIRS, g.train, g.eval, None, g.stats))


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


def _prefixed(side: str, stats: D.CleanStats) -> dict[str, Any]:
    """``CleanStats`` as report keys: ``trainRowsRead``, ``evalDuplicatesDropped``, ..."""
    return {f"{side}{k[0].upper()}{k[1:]}": v for k, v in _camel(asdict(stats)).items()}


def _camel(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        head, *rest = k.split("_")
        out[head + "".join(r.title() for r in rest)] = v
    return out


def build_evaluation(cfg: RunConfig, prep: Prepared) -> tuple[list[dict[str, Any]], D.IRSet, dict[str, Any]]:
    """Split or load the evaluation set; remove leaked queries from training; build queries/corpus/relevant."""
    ev_spec = cfg.spec.data.eval
    fmt = prep.fmt
    stats = dict(prep.stats)
    if fmt is DataFormat.BEIR:
        assert prep.beir is not None
        b = prep.beir
        if b.test_qrels:
            eval_qrels = b.test_qrels
            train_qrels = {q: d for q, d in b.train_qrels.items() if q not in eval_qrels}
        else:
            import random

            qids = sorted(b.train_qrels)
            random.Random(ev_spec.seed).shuffle(qids)
            n = max(1, round(ev_spec.held_out_fraction * len(qids)))
            eval_qrels = {q: b.train_qrels[q] for q in qids[:n]}
            train_qrels = {q: b.train_qrels[q] for q in qids[n:]}
        stats["leakedQueriesRemoved"] = len(b.train_qrels) - len(train_qrels) if b.test_qrels else 0
        train, cs = D.drop_duplicates(D.beir_pairs(b, train_qrels), fmt)
        stats.update({"trainDuplicatesDropped": cs.duplicates_dropped, "trainSameTextDropped": cs.same_text_dropped})
        irset = D.ir_from_beir(b.corpus, b.queries, eval_qrels, ev_spec)
    else:
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
    if not irset.queries:
        raise InvalidCorpus("the evaluation split has no query with a relevant document: add data or an eval set")
    if not train:
        raise InvalidCorpus("no training rows are left after holding out the evaluation split")
    stats["trainRows"] = len(train)
    stats.update({f"eval{k[0].upper()}{k[1:]}": v for k, v in irset.stats().items()})
    return train, irset, stats


def resolve_model(
    cfg: RunConfig, storage: Storage | None, work: Path, which: ModelSpec | None = None, field: str = "spec.model.base"
) -> str:
    """A local folder or hub id to load: s3:// bases are downloaded; modelCacheDir maps hub ids to folders.

    ``which`` is another model reference of the spec than spec.model (the teacher), named ``field`` in errors."""
    from eft_trainer.model_ref import resolve_ref

    dest = work / ("base-model" if which is None else field)
    return resolve_ref((which or cfg.spec.model).base, storage, dest, field, cfg.settings.model_cache_dir)


def load_model(
    cfg: RunConfig, storage: Storage | None, work: Path, which: ModelSpec | None = None, field: str = "spec.model.base"
) -> tuple[Any, str]:
    """The base model (or ``which``, named ``field``: the teacher), and where it was loaded from (a local
    folder or a hub id), for the lineage."""
    from sentence_transformers import SentenceTransformer

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


def evaluate(model: Any, irset: D.IRSet, cfg: RunConfig, corpus_embeddings: Any = None) -> Any:
    """Measure ``model``; ``corpus_embeddings`` (of the same document side) are reused instead of recomputed."""
    from eft_trainer.evaluation import dimensions, evaluate_model

    full = embedding_dim(model)
    dims = dimensions(full, cfg.spec.training.matryoshka_dims)
    return evaluate_model(
        model,
        irset,
        dims,
        cfg.spec.evaluation.k_values,
        batch_size=cfg.spec.evaluation.batch_size,
        progress=False,
        corpus_embeddings=corpus_embeddings,
    )


def mine_negatives(model: Any, cfg: RunConfig, train: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from eft_trainer.mining import mine

    hn = cfg.spec.training.hard_negatives
    if not hn.enabled or cfg.spec.data.train.format not in MINABLE_FORMATS:
        return train
    mined = mine(model, train, hn)
    log.info("mined hard negatives: %d of %d rows kept a full set", len(mined), len(train))
    return mined or train


def silver_labels(
    cfg: RunConfig, storage: Storage | None, work: Path, train: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``training.silverLabels``: the cross-encoder scores the pairs (rank 0; the rows go to every rank)."""
    from eft_trainer.silver_labels import label

    rows, stats = label(cfg, storage, work, train)
    return dist.broadcast(rows), stats


def train_model(
    model: Any,
    cfg: RunConfig,
    train: list[dict[str, Any]],
    storage: Storage | None,
    work: Path,
    callbacks: Sequence[Any] = (),
    max_steps: int = -1,
    world: World | None = None,
) -> methods.Trained:
    """Train with the spec's method (:mod:`eft_trainer.methods`); after an out-of-memory failure of an earlier
    attempt, with the cheaper setup :mod:`eft_trainer.oom` plans (an out-of-memory failure here is recorded
    for the next attempt, and raised as :class:`OutOfMemory`)."""
    from eft_trainer import oom

    method = methods.for_spec(cfg.spec)
    inp = methods.TrainInput(model, cfg, train, storage, work, callbacks, max_steps, world)
    training = cfg.spec.training
    if not oom.recoverable(training):
        return method.train(inp)
    w = world or World()
    guard = oom.Guard(oom_marker(cfg, storage, work), training, main=w.main)
    # Rank 0 reads (and updates) the marker; every rank trains with rank 0's plan.
    guard.plan, guard.attempt, guard.state = dist.broadcast(
        (guard.start(), guard.attempt, guard.state) if w.main else None
    )
    if guard.plan is None:
        ooms = guard.state.out_of_memory
        raise OutOfMemory(
            f"out of memory in training {len(ooms)} time(s) (see {oom.MARKER} beside the checkpoints), the last "
            f"with {oom.describe(ooms[-1].setup)}; nothing smaller is left to try: {OOM_ADVICE}"
        )
    tracker = oom.step_tracker()
    inp.callbacks = [*callbacks, tracker]
    inp.cached_mini_batch = guard.plan.cached_mini_batch
    try:
        trained = method.train(inp)
    except Exception as exc:
        if not oom.is_oom(exc):
            guard.ended()
            raise
        tried = guard.plan.setup
        nxt = guard.failed(tracker.step or None, exc)
        said = f"out of memory in training at step {tracker.step} with {oom.describe(tried)}"
        if nxt is None or not nxt.fallback:
            raise OutOfMemory(f"{said}; nothing smaller is left to try: {OOM_ADVICE}") from None
        raise OutOfMemory(
            f"{said}: the next attempt trains with {oom.describe(nxt.setup)}, the same batch in less memory",
            _oom_fallback(oom.fallback_summary(training, nxt, guard.attempt + 1, guard.state.out_of_memory)),
        ) from None
    except BaseException:
        guard.ended()  # KeyboardInterrupt, SystemExit: not an out-of-memory failure
        raise
    guard.ended()
    summary = guard.summary()
    if summary is not None:
        trained.details["oomFallback"] = summary
    return trained


#: What a person can do when the trainer has nothing smaller left to try.
OOM_ADVICE = (
    "lower spec.training.batchSize or spec.model.maxSeqLength, use CachedMultipleNegativesRanking with a smaller "
    "spec.training.miniBatchSize, or raise spec.resources.memory (or use a GPU with more memory)"
)


def oom_marker(cfg: RunConfig, storage: Storage | None, work: Path) -> Any:
    """Where attempts leave their out-of-memory record: beside the mirrored checkpoints, or under ``work``."""
    from eft_api.contract import CHECKPOINTS_DIR
    from eft_trainer import oom

    if storage is None:
        return oom.LocalMarker(work / oom.MARKER)
    return oom.S3Marker(storage, S3Uri.parse(cfg.run.output_prefix).join(CHECKPOINTS_DIR + oom.MARKER))


def hardware() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpus"] = torch.cuda.device_count()
    return info


def fetch_guards(cfg: RunConfig, storage: Storage | None, work: Path, fetched: Fetched) -> list[Any]:
    """Download each guard set (``spec.evaluation.guards``) and read and check it (GuardSet per guard)."""
    from eft_trainer.guards import load_guard
    from eft_trainer.publish import sha256_file

    out = []
    for i, guard in enumerate(cfg.spec.evaluation.guards):
        dest = work / "data" / "guards" / guard.name
        if dest.exists():
            shutil.rmtree(dest)
        uri = guard.uri if guard.format is not DataFormat.BEIR else guard.uri.rstrip("/") + "/"
        files = _fetch(storage, uri, dest)
        for f in files:
            rel = f.relative_to(dest).as_posix()
            entry = {"uri": base_uri(uri) + rel, "bytes": f.stat().st_size, "sha256": sha256_file(f)}
            fetched.files.append({**entry, "guard": guard.name})
        out.append(load_guard(guard, i, dest, files, cfg.spec.data.eval))
    return out


def evaluate_guards(model: Any, guard_sets: Sequence[Any], dim: int, cfg: RunConfig) -> list[Any]:
    """Each guard set measured at ``dim`` only (the gate's dimension or the full one)."""
    from eft_trainer.evaluation import evaluate_model

    ev = cfg.spec.evaluation
    return [
        evaluate_model(model, gs.irset, [dim], ev.k_values, batch_size=ev.batch_size, progress=False)
        for gs in guard_sets
    ]


def publish_run(
    cfg: RunConfig,
    storage: Storage,
    model: Any | None,
    report: dict[str, Any],
    work: Path,
    stamp: Callable[[], None] = lambda: None,
    method: methods.TrainingMethod | None = None,
) -> tuple[dict[str, Any], Artifacts]:
    """Publish the model, then the report, then the manifest; ``stamp()`` runs just before the report is
    written (after the model's upload), to complete its timings."""
    import json

    from eft_trainer.publish import model_card, publish
    from eft_trainer.report import plot, render_markdown

    out = work / "publish"
    if out.exists():
        shutil.rmtree(out)
    mdir = out / "model"
    extras: list[str] = []
    if model is not None:
        model.save(str(mdir))
        (mdir / "README.md").write_text(model_card(report))
        if method is not None:
            extras = method.save_extras(model, out / "extras")
    else:
        mdir.mkdir(parents=True)

    def write_report() -> Path:
        stamp()
        rdir = out / "report"
        rdir.mkdir(parents=True)
        (rdir / PUBLISHED_REPORT_JSON).write_text(json.dumps(report, indent=2))
        (rdir / PUBLISHED_REPORT_MD).write_text(render_markdown(report, PUBLISHED_PLOT))
        plot(report, rdir / PUBLISHED_PLOT)
        return rdir

    prefix = S3Uri.parse(cfg.run.output_prefix)
    extra_dirs = {name: out / "extras" / name for name in extras}
    index = report.get("index") if model is not None else None
    manifest = publish(storage, prefix, mdir, write_report, cfg.run.run_id, extra_dirs=extra_dirs, index=index)
    arts = Artifacts(
        model=str(prefix.join(PUBLISHED_MODEL_DIR)) if model is not None else None,
        report=str(prefix.join(PUBLISHED_REPORT_JSON)),
        manifest=str(prefix.join(PUBLISHED_MANIFEST)),
        adapter=str(prefix.join(PUBLISHED_ADAPTER_DIR)) if PUBLISHED_ADAPTER_DIR in extras else None,
    )
    return manifest, arts


# ---------------------------------------------------------------- the run


def _already_published(cfg: RunConfig, storage: Storage) -> TerminationMessage | None:
    import json

    from eft_trainer.publish import manifest_exists

    prefix = S3Uri.parse(cfg.run.output_prefix)
    if not manifest_exists(storage, prefix):
        return None
    log.info("run %s is already published under %s; not overwriting", cfg.run.run_id, prefix)
    headline = None
    rejected: list[str] | None = None
    index = None
    try:
        rep = json.loads(storage.get_bytes(prefix.join(PUBLISHED_REPORT_JSON)))
        promotion = rep.get("promotion") or {}
        rejected = [str(r) for r in promotion.get("reasons", [])] if promotion.get("rejected") else None
        index = _index_summary(rep.get("index"))
        h = rep["headline"]
        headline = Headline(
            primary_metric=rep["primaryMetric"],
            dimension=int(rep["primaryDimension"]),
            base=h["base"],
            finetuned=h["finetuned"],
            gain=h["gain"],
        )
    except (TrainerError, KeyError, ValueError):
        pass
    done = f"already published under {prefix}"
    if rejected is not None:
        outcome, reason, message = "Failed", Reason.PROMOTION_REJECTED, f"{done}, rejected: {'; '.join(rejected)}"
    else:
        outcome, reason, message = "Succeeded", Reason.SUCCEEDED, done
    return TerminationMessage(
        outcome=outcome,
        reason=reason,
        message=message,
        run_id=cfg.run.run_id,
        headline=headline,
        index=index,
        artifacts=Artifacts(
            model=str(prefix.join(PUBLISHED_MODEL_DIR)) if rejected is None else None,
            report=str(prefix.join(PUBLISHED_REPORT_JSON)),
            manifest=str(prefix.join(PUBLISHED_MANIFEST)),
        ),
    )


def run_job(
    cfg: RunConfig,
    *,
    callbacks: Sequence[Any] = (),
    max_steps: int = -1,
    progress: Any = None,
    world: World | None = None,
) -> TerminationMessage:
    """Run every step; raise TrainerError (or anything) on failure. ``callbacks`` go to the HF Trainer.

    Under several processes (``world``) every rank fetches, checks and trains; rank 0 alone evaluates (base
    and fine-tuned), mines hard negatives (broadcast to the others) and publishes. The other ranks return
    after training with a message of their own that nobody publishes."""
    from eft_trainer.metrics import Progress
    from eft_trainer.report import build_report, paired_bootstrap

    spec = cfg.spec
    w = world or World()
    work = Path(cfg.settings.work_dir) / cfg.run.run_id
    work.mkdir(parents=True, exist_ok=True)
    # The processes of one pod share the work dir: each fetches data (and an s3:// base model) into its own.
    own = work / f"rank-{w.rank}" if w.distributed else work
    prog = progress or Progress(0)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()

    def phase(name: str) -> float:
        prog.set_phase(name)
        log.info("phase %s started", name)
        return time.perf_counter()

    storage = Storage(spec.storage) if not os.environ.get(DATA_ROOT_ENV) else None
    if storage is not None:
        done = _already_published(cfg, storage)
        if done is not None:
            return done

    t = phase("fetch")
    # Generated pairs (documents) are a content-addressed artifact: every rank reads or makes the same one.
    gen = generate_pairs(cfg, storage, own) if spec.data.train.format is DataFormat.DOCUMENTS else None
    fetched = gen.fetched if gen else fetch_data(cfg, storage, own)
    timings["fetch"] = time.perf_counter() - t
    t = phase("check")
    prep = gen.prepared if gen else load_and_check(cfg, fetched)
    train, irset, stats = build_evaluation(cfg, prep)
    guard_sets = fetch_guards(cfg, storage, own, fetched) if w.main else []
    stats["files"] = fetched.files
    timings["check"] = time.perf_counter() - t
    log.info("data: %s", {k: v for k, v in stats.items() if k != "files"})

    t = time.perf_counter()
    model, source = (gen.model, gen.source) if gen else load_model(cfg, storage, own)
    timings["loadModel"] = time.perf_counter() - t
    from eft_trainer.lineage import lineage

    lineage_info = lineage(cfg, model, source)
    if not w.main:
        return _train_only(cfg, model, train, storage, work, w, callbacks, max_steps)
    t = phase("evaluate-base")
    base = evaluate(model, irset, cfg)
    prog.record_eval("base", base.metrics)
    pm = spec.evaluation.primary_metric
    gate = spec.evaluation.gate
    pdim = gate.dimension if gate and gate.dimension and gate.dimension in base.metrics else max(base.metrics)
    guards_base = evaluate_guards(model, guard_sets, pdim, cfg)
    timings["evaluateBase"] = time.perf_counter() - t
    log.info("base model: %s", _headline_str(base.metrics, spec.evaluation.primary_metric))

    if spec.training.hard_negatives.enabled:
        t = phase("mine")
        train = dist.broadcast(mine_negatives(model, cfg, train))
        timings["mine"] = time.perf_counter() - t
    if spec.training.silver_labels is not None:
        t = phase("label")
        train, stats["silverLabels"] = silver_labels(cfg, storage, own, train)
        timings["label"] = time.perf_counter() - t

    pre = None
    if spec.training.pretrain is not None:
        t = phase("pretrain")
        from eft_trainer.pretrain import pretrain_stage

        cb = [prog.callback(spec.training.pretrain.batch_size), *callbacks]
        pre = pretrain_stage(cfg, model, train, storage, work, _fetch, callbacks=cb, max_steps=max_steps)
        model = pre.model
        stats["files"] = [*fetched.files, *pre.files]
        timings["pretrain"] = time.perf_counter() - t
        _raise_if_interrupted(pre.stats)

    method = methods.for_spec(spec)
    t = phase("train")
    trained = train_model(
        model,
        cfg,
        train,
        storage,
        work,
        callbacks=[prog.callback(spec.training.batch_size * w.size), *callbacks],
        max_steps=max_steps,
        world=w,
    )
    model, stats_train = trained.model, trained.stats
    timings["train"] = time.perf_counter() - t
    _raise_if_interrupted(stats_train)

    t = phase("evaluate-finetuned")
    # A method that leaves the document side alone reuses the base model's corpus embeddings.
    reuse = None if method.reindex_required or pre is not None else base.corpus_embeddings
    tuned = evaluate(model, irset, cfg, corpus_embeddings=reuse)
    stats["corpusEmbeddingsReused"] = reuse is not None
    prog.record_eval("finetuned", tuned.metrics)
    guards_tuned = evaluate_guards(model, guard_sets, pdim, cfg)
    timings["evaluateFinetuned"] = time.perf_counter() - t
    log.info("fine-tuned model: %s", _headline_str(tuned.metrics, spec.evaluation.primary_metric))
    teacher = None
    if trained.reference is not None:
        t = phase("evaluate-teacher")
        teacher = evaluate(trained.reference, irset, cfg)
        timings["evaluateTeacher"] = time.perf_counter() - t
        log.info("teacher: %s", _headline_str(teacher.metrics, pm))

    from eft_trainer import guards as G

    boot = paired_bootstrap(base.per_query[pdim][pm], tuned.per_query[pdim][pm], seed=spec.training.seed)
    guard_results = [
        G.figures(
            gs, b.per_query[pdim][pm], f.per_query[pdim][pm], primary_metric=pm, dimension=pdim, seed=spec.training.seed
        )
        for gs, b, f in zip(guard_sets, guards_base, guards_tuned, strict=True)
    ]
    for r in guard_results:
        log.info("guard %s", G.summary(r))
    report = build_report(
        config={
            "name": cfg.run.name,
            "namespace": cfg.run.namespace,
            "runId": cfg.run.run_id,
            "method": method.name,
            "loss": spec.training.loss.value,
            "format": spec.data.train.format.value,
            "training": spec.training.model_dump(mode="json", by_alias=True),
            "evaluation": spec.evaluation.model_dump(mode="json", by_alias=True, exclude_none=True),
            **lineage_info,
        },
        data=stats,
        base=base.metrics,
        tuned=tuned.metrics,
        primary_metric=pm,
        primary_dim=pdim,
        bootstrap=boot,
        timings=timings,
        training={**_camel(asdict(stats_train)), "pairsPerSecond": stats_train.samples_per_second, **trained.details},
        hardware={**hardware(), "processes": w.size},
    )
    from eft_trainer.publish import index_info

    # Pre-training changes the document side too: an existing index must be re-embedded.
    reindex = method.reindex_required or pre is not None
    report["index"] = index_info(model, sorted(base.metrics, reverse=True), reindex)
    if pre is not None:
        report["pretrain"] = pre.section
    if gen:
        report["generation"] = gen.generated.report_section()
    if guard_results:
        report["guards"] = guard_results
    if teacher is not None:
        from eft_trainer.report import teacher_figures

        report["teacher"] = teacher_figures(teacher, tuned, pm, pdim, spec.training.seed)
    h = report["headline"]
    why = []
    if gate is not None and h["gain"] < gate.min_gain:
        why.append(f"{pm} gain {h['gain']:+.4f} at {pdim} dims is below spec.evaluation.gate.minGain {gate.min_gain}")
    if guard_rejection := G.rejection(guard_results):
        why.append(guard_rejection)
    rejected = bool(why)
    # The verdict is published with the report, so that a rerun of a published run returns the same outcome.
    report["promotion"] = {"rejected": rejected, "reasons": why}
    t = phase("publish")

    def stamp() -> None:
        """Publishing up to the report's own upload (the model's upload included) and the run's total."""
        report["timings"]["publish"] = time.perf_counter() - t
        report["timings"]["total"] = time.perf_counter() - t_start

    arts = Artifacts()
    if storage is not None:
        _, arts = publish_run(cfg, storage, None if rejected else model, report, work, stamp, method)
    else:
        local = work / "published"
        model.save(str(local / "model"))
        arts = Artifacts(model=str(local / "model"))
        stamp()
    headline = Headline(primary_metric=pm, dimension=pdim, base=h["base"], finetuned=h["finetuned"], gain=h["gain"])
    figures = f"{pm} at {pdim} dims {h['base']:.4f} -> {h['finetuned']:.4f} ({h['gain']:+.4f})"
    if guard_results:
        figures += "; guards: " + "; ".join(G.summary(r) for r in guard_results)
    fallback = _oom_fallback(trained.details.get("oomFallback"))
    if fallback is not None:
        figures += (
            f"; out of memory before: trained with {fallback.to_loss} (mini-batch {fallback.mini_batch_size}) "
            f"instead of {fallback.from_loss} in attempt {fallback.attempt}"
        )
    if teacher is not None:
        figures += f"; teacher {report['teacher']['primary']:.4f} at {report['teacher']['dimension']} dims"
    if rejected:
        outcome, reason = "Failed", Reason.PROMOTION_REJECTED
        message = "; ".join(why) + f" ({figures})"
    else:
        prog.set_phase("done")
        outcome, reason = "Succeeded", Reason.SUCCEEDED
        message = figures
    return TerminationMessage(
        outcome=outcome,
        reason=reason,
        message=message,
        run_id=cfg.run.run_id,
        headline=headline,
        index=_index_summary(report.get("index")),
        artifacts=arts,
        generation=gen.generated.summary() if gen else None,
        guards=[G.termination_figures(r) for r in guard_results] or None,
        oom_fallback=fallback,
    )


def _oom_fallback(summary: dict[str, Any] | None) -> OomFallback | None:
    """The termination message's part of the report's ``training.oomFallback``."""
    if not summary:
        return None
    keys = {f.alias for f in OomFallback.model_fields.values()}
    return OomFallback.model_validate({k: v for k, v in summary.items() if k in keys})


def _index_summary(index: dict[str, Any] | None) -> IndexSummary | None:
    if not index:
        return None
    return IndexSummary(
        reindex_required=index["reindexRequired"],
        dimension=index["embeddingDimension"],
        similarity=index["similarity"],
        normalized=index["normalized"],
    )


def _raise_if_interrupted(stats: Any) -> None:
    if stats.interrupted:
        from eft_trainer.errors import Interrupted

        raise Interrupted(f"stopped by SIGTERM at step {stats.steps}; the checkpoint is mirrored and a retry resumes")


def _train_only(
    cfg: RunConfig,
    model: Any,
    train: list[dict[str, Any]],
    storage: Storage | None,
    work: Path,
    w: World,
    callbacks: Sequence[Any],
    max_steps: int,
) -> TerminationMessage:
    """A rank other than 0: take rank 0's mined rows, train its share, and leave the rest to rank 0."""
    if cfg.spec.training.hard_negatives.enabled:
        train = dist.broadcast(None)
    if cfg.spec.training.silver_labels is not None:
        train = dist.broadcast(None)
    stats = train_model(model, cfg, train, storage, work, callbacks=callbacks, max_steps=max_steps, world=w).stats
    _raise_if_interrupted(stats)
    return TerminationMessage(
        outcome="Succeeded",
        reason=Reason.SUCCEEDED,
        message=f"rank {w.rank} trained {stats.steps} steps; rank 0 evaluates and publishes",
        run_id=cfg.run.run_id,
    )


def embedding_dim(model: Any) -> int:
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get())


def _headline_str(metrics: dict[int, dict[str, float]], pm: str) -> str:
    return ", ".join(f"{d} dims {pm}={m[pm]:.4f}" for d, m in metrics.items())


def failure(exc: BaseException, run_id: str | None) -> TerminationMessage:
    """The termination message of a failure (pure): reason from the error class, message redacted."""
    reason: Reason
    if isinstance(exc, TrainerError):
        reason, message = exc.reason, exc.message
    elif _is_oom(exc):
        e = OutOfMemory(
            "out of memory: lower spec.training.batchSize or use CachedMultipleNegativesRanking with a smaller "
            "spec.training.miniBatchSize, or lower spec.model.maxSeqLength"
        )
        reason, message = e.reason, e.message
    else:
        reason, message = Reason.CRASHED, redact(f"{type(exc).__name__}: {str(exc)[:500]}")
    fallback = exc.fallback if isinstance(exc, OutOfMemory) else None
    return TerminationMessage(outcome="Failed", reason=reason, message=message, run_id=run_id, oom_fallback=fallback)


def _is_oom(exc: BaseException) -> bool:
    from eft_trainer.oom import is_oom

    return is_oom(exc)


def exit_code(msg: TerminationMessage) -> int:
    """The exit code of the message's class; an out-of-memory failure that planned a fallback is retried."""
    if msg.outcome == "Failed" and msg.reason == Reason.OOM and msg.oom_fallback is not None:
        return int(ExitCode.OUT_OF_MEMORY_FALLBACK)
    try:
        return int(EXIT_CODE_OF_REASON[Reason(msg.reason)])
    except ValueError:
        return int(ExitCode.CRASHED)


def finish(msg: TerminationMessage, world: World | None = None) -> int:
    """Write the termination message (at most 4 KB; rank 0 only) and return the exit code of its class."""
    w = world or World()
    if w.main:
        path = os.environ.get(TERMINATION_ENV, TERMINATION_LOG)
        text = msg.to_json()
        try:
            Path(path).write_text(text)
        except OSError:
            log.warning("could not write the termination message to %s", path)
    level = logging.INFO if msg.outcome == "Succeeded" else logging.ERROR
    log.log(level, "run %s finished: %s: %s", msg.run_id, msg.reason, msg.message)
    return exit_code(msg)


def main(argv: list[str] | None = None, *, callbacks: Sequence[Any] = (), max_steps: int = -1) -> int:
    """Load the run config, run the job, write the termination message, return the exit code.

    ``eft-trainer torchrun ARGS...`` starts ``torchrun ARGS...`` instead (:mod:`eft_trainer.launch`); under
    torchrun each worker runs this function: rank 0 as described, the others train, then wait at a barrier
    for rank 0 to finish and exit 0.
    """
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["torchrun"]:
        from eft_trainer.launch import launch

        return launch(args[1:])
    from eft_trainer.config import load_run_config
    from eft_trainer.metrics import Progress

    setup_logging()
    run_id: str | None = None
    progress = None
    world = World()
    ended = False  # the run reached its end (published, rejected or already published) on this rank
    try:
        world = dist.from_env()
        dist.init(world)
        cfg = load_run_config()
        run_id = cfg.run.run_id
        progress = Progress(cfg.settings.metrics_port if world.main else 0)
        msg = run_job(cfg, callbacks=callbacks, max_steps=max_steps, progress=progress, world=world)
        if world.main and registry.wanted(cfg, msg):  # spec.output.registry: after publication
            store = Storage(cfg.spec.storage) if not os.environ.get(DATA_ROOT_ENV) else None
            msg = registry.after_publish(cfg, msg, registry.read_report(store, cfg) if store else None)
        ended = True
    except Exception as exc:
        if not isinstance(exc, TrainerError) and not _is_oom(exc):
            log.exception("the trainer crashed")
        msg = failure(exc, run_id)
        if progress is not None:
            progress.set_phase("failed")
    finally:
        if progress is not None:
            progress.close()
    code = finish(msg, world)
    if world.distributed and ended:
        # The other ranks wait here until rank 0 has evaluated and published; a rank that failed exits at
        # once instead, and torchrun stops the others (the attempt fails; the retry resumes).
        dist.barrier()
        dist.close()
    return code if world.main else 0 if ended else code
