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
:func:`load_model`, :func:`evaluate` (base), :func:`mine_negatives`, :func:`train_model`, :func:`evaluate`
(fine-tuned), :func:`publish_run`, then :func:`finish` writes the termination message; the exit code is
the class of the outcome (``eft_api.contract.ExitCode``).
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
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
    Artifacts,
    ExitCode,
    Headline,
    IndexSummary,
    Reason,
    RunConfig,
    TerminationMessage,
)
from eft_api.spec import MINABLE_FORMATS, DataFormat
from eft_trainer import data as D
from eft_trainer import methods
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

TERMINATION_ENV = "EFT_TERMINATION_LOG"
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
    out = Fetched(dest, train)
    if spec.eval.uri:
        edest = work / "data" / "eval"
        if edest.exists():
            shutil.rmtree(edest)
        out.eval_root = edest
        out.eval_files = _fetch(storage, spec.eval.uri, edest)
    base_train = spec.train.uri if spec.train.uri.endswith("/") else spec.train.uri.rsplit("/", 1)[0] + "/"
    for root, files, uri in ((dest, train, base_train), (out.eval_root, out.eval_files, spec.eval.uri or "")):
        for f in files:
            assert root is not None
            rel = f.relative_to(root).as_posix()
            full = uri if not uri.endswith("/") and uri else uri + rel
            out.files.append({"uri": full, "bytes": f.stat().st_size, "sha256": sha256_file(f)})
    return out


@dataclass
class Prepared:
    fmt: DataFormat
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]] | None
    beir: D.Beir | None
    stats: dict[str, Any]


def load_and_check(cfg: RunConfig, fetched: Fetched) -> Prepared:
    """Read, map columns, check every row (file and line on failure), drop duplicates (counted)."""
    tr = cfg.spec.data.train
    fmt = tr.format
    if fmt is DataFormat.BEIR:
        beir = D.read_beir(fetched.train_root)
        return Prepared(fmt, [], None, beir, {"corpus": len(beir.corpus), "queries": len(beir.queries)})
    rows = D.read_files(fetched.train_files, tr.file_type, fetched.train_root)
    records, stats = D.drop_duplicates(D.map_and_check(rows, fmt, tr.columns), fmt)
    ev = None
    if fetched.eval_files:
        erows = D.read_files(fetched.eval_files, tr.file_type, fetched.eval_root)
        ev, _ = D.drop_duplicates(D.map_and_check(erows, fmt, tr.columns), fmt)
    if not records:
        raise InvalidCorpus(
            "no training rows are left after dropping duplicates and pairs whose positive equals the anchor"
        )
    return Prepared(
        fmt, records, ev, None, {f"train{k[0].upper()}{k[1:]}": v for k, v in _camel(asdict(stats)).items()}
    )


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
        train, leaked = D.remove_leakage(train, ev, fmt)
        stats["leakedRowsRemoved"] = leaked
        if fmt is DataFormat.LABELED_TEXTS:
            irset = D.ir_from_labeled(ev)
        elif fmt is DataFormat.SCORED_PAIRS:
            irset = D.ir_from_scored(ev, train, ev_spec)
        else:
            irset = D.ir_from_pairs(ev, train, ev_spec, negatives=fmt is DataFormat.TRIPLETS)
        stats["evalRows"] = len(ev)
    if not irset.queries:
        raise InvalidCorpus("the evaluation split has no query with a relevant document: add data or an eval set")
    if not train:
        raise InvalidCorpus("no training rows are left after holding out the evaluation split")
    stats["trainRows"] = len(train)
    stats.update({f"eval{k[0].upper()}{k[1:]}": v for k, v in irset.stats().items()})
    return train, irset, stats


def resolve_model(cfg: RunConfig, storage: Storage | None, work: Path) -> str:
    """A local folder or hub id to load: s3:// bases are downloaded; modelCacheDir maps hub ids to folders."""
    base = cfg.spec.model.base
    if base.startswith("s3://"):
        dest = work / "base-model"
        if dest.exists():
            shutil.rmtree(dest)
        try:
            assert storage is not None
            storage.download_tree(S3Uri.parse(base if base.endswith("/") else base + "/"), dest, allow_object=False)
        except S3NotFound:
            raise ModelNotFound(f"spec.model.base {base}: no model files under that prefix") from None
        return str(dest)
    cache = cfg.settings.model_cache_dir
    if cache and (Path(cache) / base).is_dir():
        return str(Path(cache) / base)
    return base


def load_model(cfg: RunConfig, storage: Storage | None, work: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    m = cfg.spec.model
    where = resolve_model(cfg, storage, work)
    t0 = time.perf_counter()
    try:
        model = SentenceTransformer(where, revision=m.revision, trust_remote_code=m.trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        offline = " (offline: HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
        raise ModelNotFound(
            f"spec.model.base {m.base} could not be loaded{offline}: {type(exc).__name__}; check the id "
            "(org/name), the revision, or the s3:// prefix"
        ) from None
    if m.max_seq_length:
        model.max_seq_length = m.max_seq_length
    check_dimensions(cfg.spec, embedding_dim(model), m.base)
    log.info("loaded model %s in %.1fs", m.base, time.perf_counter() - t0)
    return model


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


def train_model(
    model: Any,
    cfg: RunConfig,
    train: list[dict[str, Any]],
    storage: Storage | None,
    work: Path,
    callbacks: Sequence[Any] = (),
    max_steps: int = -1,
) -> methods.Trained:
    """Train with the spec's method (:mod:`eft_trainer.methods`)."""
    inp = methods.TrainInput(model, cfg, train, storage, work, callbacks, max_steps)
    return methods.for_spec(cfg.spec).train(inp)


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


def publish_run(
    cfg: RunConfig,
    storage: Storage,
    model: Any | None,
    report: dict[str, Any],
    work: Path,
    method: methods.TrainingMethod | None = None,
) -> tuple[dict[str, Any], Artifacts]:
    import json

    from eft_trainer.publish import model_card, publish
    from eft_trainer.report import plot, render_markdown

    out = work / "publish"
    if out.exists():
        shutil.rmtree(out)
    rdir = out / "report"
    rdir.mkdir(parents=True)
    (rdir / PUBLISHED_REPORT_JSON).write_text(json.dumps(report, indent=2))
    (rdir / PUBLISHED_REPORT_MD).write_text(render_markdown(report, PUBLISHED_PLOT))
    plot(report, rdir / PUBLISHED_PLOT)
    mdir = out / "model"
    extras: list[str] = []
    if model is not None:
        model.save(str(mdir))
        (mdir / "README.md").write_text(model_card(report))
        if method is not None:
            extras = method.save_extras(model, out / "extras")
    else:
        mdir.mkdir()
    prefix = S3Uri.parse(cfg.run.output_prefix)
    extra_dirs = {name: out / "extras" / name for name in extras}
    index = report.get("index") if model is not None else None
    manifest = publish(storage, prefix, mdir, rdir, cfg.run.run_id, extra_dirs=extra_dirs, index=index)
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
    index = None
    try:
        rep = json.loads(storage.get_bytes(prefix.join(PUBLISHED_REPORT_JSON)))
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
    return TerminationMessage(
        outcome="Succeeded",
        reason=Reason.SUCCEEDED,
        message=f"already published under {prefix}",
        run_id=cfg.run.run_id,
        headline=headline,
        index=index,
        artifacts=Artifacts(
            model=str(prefix.join(PUBLISHED_MODEL_DIR)),
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
) -> TerminationMessage:
    """Run every step; raise TrainerError (or anything) on failure. ``callbacks`` go to the HF Trainer."""
    from eft_trainer.metrics import Progress
    from eft_trainer.report import build_report, paired_bootstrap
    from eft_trainer.training import check_loss_fits

    spec = cfg.spec
    work = Path(cfg.settings.work_dir) / cfg.run.run_id
    work.mkdir(parents=True, exist_ok=True)
    prog = progress or Progress(0)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()

    def phase(name: str) -> float:
        prog.set_phase(name)
        log.info("phase %s started", name)
        return time.perf_counter()

    check_loss_fits(spec.data.train.format, spec.training.loss)
    storage = Storage(spec.storage) if not os.environ.get(DATA_ROOT_ENV) else None
    if storage is not None:
        done = _already_published(cfg, storage)
        if done is not None:
            return done

    t = phase("fetch")
    fetched = fetch_data(cfg, storage, work)
    timings["fetch"] = time.perf_counter() - t
    t = phase("check")
    prep = load_and_check(cfg, fetched)
    train, irset, stats = build_evaluation(cfg, prep)
    stats["files"] = fetched.files
    timings["check"] = time.perf_counter() - t
    log.info("data: %s", {k: v for k, v in stats.items() if k != "files"})

    t = time.perf_counter()
    model = load_model(cfg, storage, work)
    timings["loadModel"] = time.perf_counter() - t
    t = phase("evaluate-base")
    base = evaluate(model, irset, cfg)
    prog.record_eval("base", base.metrics)
    timings["evaluateBase"] = time.perf_counter() - t
    log.info("base model: %s", _headline_str(base.metrics, spec.evaluation.primary_metric))

    if spec.training.hard_negatives.enabled:
        t = phase("mine")
        train = mine_negatives(model, cfg, train)
        timings["mine"] = time.perf_counter() - t

    method = methods.for_spec(spec)
    t = phase("train")
    trained = train_model(
        model,
        cfg,
        train,
        storage,
        work,
        callbacks=[prog.callback(spec.training.batch_size), *callbacks],
        max_steps=max_steps,
    )
    model, stats_train = trained.model, trained.stats
    timings["train"] = time.perf_counter() - t
    if stats_train.interrupted:
        from eft_trainer.errors import Interrupted

        raise Interrupted(
            f"stopped by SIGTERM at step {stats_train.steps}; the checkpoint is mirrored and a retry resumes"
        )

    t = phase("evaluate-finetuned")
    # A method that leaves the document side alone reuses the base model's corpus embeddings.
    reuse = None if method.reindex_required else base.corpus_embeddings
    tuned = evaluate(model, irset, cfg, corpus_embeddings=reuse)
    stats["corpusEmbeddingsReused"] = reuse is not None
    prog.record_eval("finetuned", tuned.metrics)
    timings["evaluateFinetuned"] = time.perf_counter() - t
    log.info("fine-tuned model: %s", _headline_str(tuned.metrics, spec.evaluation.primary_metric))

    pm = spec.evaluation.primary_metric
    full = max(base.metrics)
    gate = spec.evaluation.gate
    pdim = gate.dimension if gate and gate.dimension and gate.dimension in base.metrics else full
    boot = paired_bootstrap(base.per_query[pdim][pm], tuned.per_query[pdim][pm], seed=spec.training.seed)
    timings["total"] = time.perf_counter() - t_start
    report = build_report(
        config={
            "name": cfg.run.name,
            "namespace": cfg.run.namespace,
            "runId": cfg.run.run_id,
            "baseModel": spec.model.base,
            "method": method.name,
            "loss": spec.training.loss.value,
            "format": spec.data.train.format.value,
            "training": spec.training.model_dump(mode="json", by_alias=True),
            "evaluation": spec.evaluation.model_dump(mode="json", by_alias=True, exclude_none=True),
            "maxSeqLength": spec.model.max_seq_length,
        },
        data=stats,
        base=base.metrics,
        tuned=tuned.metrics,
        primary_metric=pm,
        primary_dim=pdim,
        bootstrap=boot,
        timings=timings,
        training={**_camel(asdict(stats_train)), "pairsPerSecond": stats_train.samples_per_second, **trained.details},
        hardware=hardware(),
    )
    from eft_trainer.publish import index_info

    report["index"] = index_info(model, sorted(base.metrics, reverse=True), method.reindex_required)
    rejected = gate is not None and report["headline"]["gain"] < gate.min_gain
    t = phase("publish")
    arts = Artifacts()
    if storage is not None:
        _, arts = publish_run(cfg, storage, None if rejected else model, report, work, method)
    else:
        local = work / "published"
        model.save(str(local / "model"))
        arts = Artifacts(model=str(local / "model"))
    timings["publish"] = time.perf_counter() - t
    h = report["headline"]
    headline = Headline(primary_metric=pm, dimension=pdim, base=h["base"], finetuned=h["finetuned"], gain=h["gain"])
    if rejected:
        assert gate is not None
        outcome, reason = "Failed", Reason.PROMOTION_REJECTED
        message = f"{pm} gain {h['gain']:+.4f} at {pdim} dims is below spec.evaluation.gate.minGain {gate.min_gain}"
    else:
        prog.set_phase("done")
        outcome, reason = "Succeeded", Reason.SUCCEEDED
        message = f"{pm} at {pdim} dims {h['base']:.4f} -> {h['finetuned']:.4f} ({h['gain']:+.4f})"
    return TerminationMessage(
        outcome=outcome,
        reason=reason,
        message=message,
        run_id=cfg.run.run_id,
        headline=headline,
        index=_index_summary(report.get("index")),
        artifacts=arts,
    )


def _index_summary(index: dict[str, Any] | None) -> IndexSummary | None:
    if not index:
        return None
    return IndexSummary(
        reindex_required=index["reindexRequired"],
        dimension=index["embeddingDimension"],
        similarity=index["similarity"],
        normalized=index["normalized"],
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
            "GPU out of memory: lower spec.training.batchSize or use CachedMultipleNegativesRanking with a smaller "
            "spec.training.miniBatchSize, or lower spec.model.maxSeqLength"
        )
        reason, message = e.reason, e.message
    else:
        reason, message = Reason.CRASHED, redact(f"{type(exc).__name__}: {str(exc)[:500]}")
    return TerminationMessage(outcome="Failed", reason=reason, message=message, run_id=run_id)


def _is_oom(exc: BaseException) -> bool:
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:
        pass
    return isinstance(exc, RuntimeError) and "CUDA out of memory" in str(exc)


def exit_code(msg: TerminationMessage) -> int:
    try:
        return int(EXIT_CODE_OF_REASON[Reason(msg.reason)])
    except ValueError:
        return int(ExitCode.CRASHED)


def finish(msg: TerminationMessage) -> int:
    """Write the termination message (at most 4 KB) and return the exit code of its class."""
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
    """Load the run config, run the job, write the termination message, return the exit code."""
    from eft_trainer.config import load_run_config
    from eft_trainer.metrics import Progress

    setup_logging()
    run_id: str | None = None
    progress = None
    try:
        cfg = load_run_config()
        run_id = cfg.run.run_id
        progress = Progress(cfg.settings.metrics_port)
        msg = run_job(cfg, callbacks=callbacks, max_steps=max_steps, progress=progress)
    except Exception as exc:
        if not isinstance(exc, TrainerError) and not _is_oom(exc):
            log.exception("the trainer crashed")
        msg = failure(exc, run_id)
        if progress is not None:
            progress.set_phase("failed")
    finally:
        if progress is not None:
            progress.close()
    return finish(msg)
