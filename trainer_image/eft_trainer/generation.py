"""The generate stage (format documents only): documents in, (query, positive) pairs out, as an artifact.

1. List the documents (keys, sizes, ETags) and hash the listing with every generation setting.
2. If ``<output>/<namespace>/<name>/datasets/<hash>/manifest.json`` exists, reuse that dataset: no
   document is read and no generator is called.
3. Else read the documents (:mod:`eft_trainer.documents`), chunk them in the base model's tokens, take a
   seeded sample of at most ``maxChunks`` chunks, run the generators (:mod:`eft_trainer.generate`), filter
   (:mod:`eft_trainer.generate.filters`: on the text, then, when roundTrip or easiness is on, on the base
   model's embeddings of the chunks and queries, made once), and publish ``pairs.jsonl``, ``datacard.json``
   and, last, ``manifest.json`` (which lists the saved parts of model-based generators too).
4. Split for evaluation by documents (a seeded held-out fraction of them: no document has chunks on both
   sides), or read ``data.eval.uri`` (real questions, pairs in jsonl) and train on every pair.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eft_api.contract import GenerationSummary, RunConfig
from eft_api.spec import DataFormat, GenerateFilter, dump_spec
from eft_trainer import data as D
from eft_trainer.documents import Chunk, Document, Refused, Tokenizer, chunk_documents, read_document
from eft_trainer.errors import InvalidCorpus
from eft_trainer.evaluation import encode
from eft_trainer.generate import Generator, Pair, build
from eft_trainer.generate.filters import apply, apply_embedded, uses_model
from eft_trainer.generate.llm import prompt_template
from eft_trainer.publish import sha256_file
from eft_trainer.storage import S3Uri, Store, base_uri, fetch

log = logging.getLogger("eft_trainer.generation")

#: Bump when extraction, chunking or a generator changes what the same settings make (it is in the hash).
GENERATION_VERSION = 2
DATASETS_DIR = "datasets"
PAIRS_FILE = "pairs.jsonl"
DATA_CARD = "datacard.json"
MANIFEST = "manifest.json"
SAMPLES = 20
#: Generators that call a model: their output is saved in parts of this many chunks, and resumed.
RESUMABLE = frozenset({"llm", "seq2seq"})
PART_CHUNKS = 256

#: Normalised embeddings of texts, as the base model makes them for a task ("query" or "document").
Embed = Callable[[list[str], str], Any]


@dataclass
class Generated:
    pairs: list[dict[str, Any]]
    card: dict[str, Any]
    dataset_uri: str
    reused: bool
    pairs_file: dict[str, Any] = field(default_factory=dict)
    train: list[dict[str, Any]] = field(default_factory=list)
    eval: list[dict[str, Any]] = field(default_factory=list)
    eval_files: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> GenerationSummary:
        c = self.card
        return GenerationSummary(
            dataset=self.dataset_uri,
            reused=self.reused,
            documents=c["documentsRead"],
            chunks=c["chunksUsed"],
            pairs=c["pairs"],
            dropped=sum(c["dropped"].values()),
            requests=c.get("requests", 0),
            refused=sum(c.get("documentsRefused", {}).values()),
        )

    def report_section(self) -> dict[str, Any]:
        """The report's generation section: counts by reason and sample pairs for a person to read."""
        rng = random.Random(0)
        samples = rng.sample(self.pairs, min(SAMPLES, len(self.pairs)))
        keep = ("documentsListed", "documentsRead", "documentsEmpty", "chunks", "chunksUsed", "pairsGenerated")
        refused: dict[str, Any] = {k: self.card[k] for k in ("documentsRefused", "refused") if k in self.card}
        return {
            "dataset": self.dataset_uri,
            "reused": self.reused,
            "hash": self.card["hash"],
            "generators": self.card["generators"],
            **{k: self.card[k] for k in keep},
            **refused,
            "pairs": self.card["pairs"],
            "dropped": self.card["dropped"],
            **({"modelFilter": self.card["modelFilter"]} if "modelFilter" in self.card else {}),
            "generatorStats": self.card["generatorStats"],
            "split": self.stats.get("split"),
            "samples": [{"query": p["anchor"], "positive": p["positive"][:400], "doc": p["doc"]} for p in samples],
        }


# ---------------------------------------------------------------- listing and hash


def list_documents(cfg: RunConfig, storage: Store) -> tuple[S3Uri, list[tuple[str, int, str]]]:
    """(base prefix, [(key, size, ETag)]) of the documents: one object, or every object under a prefix (a local
    store's ETag is the file's sha256)."""
    uri = S3Uri.parse(cfg.spec.data.train.uri)
    key = uri.key
    prefix = key if not key or key.endswith("/") else key + "/"

    def listed(under: str) -> list[tuple[str, int, str]]:
        return storage.list_objects_meta(S3Uri(uri.bucket, under))

    exact = [o for o in listed(key) if o[0] == key] if key and not key.endswith("/") else []
    if exact:
        base, listing = (key.rsplit("/", 1)[0] + "/" if "/" in key else ""), exact
    else:
        base, listing = prefix, [o for o in listed(prefix) if not o[0].endswith("/")]
    if not listing:
        storage.check_bucket(uri.bucket)  # a missing bucket is S3NotFound, not an empty prefix
        raise InvalidCorpus(f"spec.data.train.uri {cfg.spec.data.train.uri}: no documents there (an empty prefix)")
    return S3Uri(uri.bucket, base), sorted(listing)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dataset_hash(cfg: RunConfig, listing: list[tuple[str, int, str]], prompt: str | None) -> str:
    """What the generated pairs depend on: the documents' listing and every generation setting."""
    spec = cfg.spec
    generate = dump_spec(spec)["data"]["generate"]
    # Filters that came later are left out while off: datasets made before them keep their hash (and an llm's pairs).
    if not generate["filter"]["roundTrip"]["enabled"]:
        del generate["filter"]["roundTrip"]
    if not generate["filter"]["easiness"]["dropFraction"]:
        del generate["filter"]["easiness"]
    doc = {
        "version": GENERATION_VERSION,
        "documents": [list(o) for o in listing],
        "generate": generate,
        "documentType": spec.data.train.document_type.value if spec.data.train.document_type else None,
        "textColumn": spec.data.train.columns.text,
        "tokenizer": [spec.model.base, spec.model.revision],  # chunks are counted in its tokens
        "prompt": prompt,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


def dataset_prefix(cfg: RunConfig, digest: str) -> S3Uri:
    out = cfg.spec.output.uri.rstrip("/")
    return S3Uri.parse(f"{out}/{cfg.run.namespace}/{cfg.run.name}/{DATASETS_DIR}/{digest}/")


# ---------------------------------------------------------------- the artifact


def load_dataset(storage: Store, prefix: S3Uri) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]] | None:
    """The published pairs and data card, or None when there is no complete dataset (no manifest)."""
    if not storage.exists(prefix.join(MANIFEST)):
        return None
    manifest = json.loads(storage.get_bytes(prefix.join(MANIFEST)))
    pairs_bytes, card_bytes = storage.get_bytes(prefix.join(PAIRS_FILE)), storage.get_bytes(prefix.join(DATA_CARD))
    sums = {o["key"]: o["sha256"] for o in manifest["objects"]}
    if sums.get(PAIRS_FILE) != _sha(pairs_bytes) or sums.get(DATA_CARD) != _sha(card_bytes):
        log.warning("dataset %s does not match its manifest; generating it again", prefix)
        return None
    pairs = [json.loads(line) for line in pairs_bytes.decode().splitlines() if line.strip()]
    return (
        pairs,
        json.loads(card_bytes),
        {"uri": str(prefix.join(PAIRS_FILE)), "bytes": len(pairs_bytes), "sha256": sums[PAIRS_FILE]},
    )


def publish_dataset(
    storage: Store,
    prefix: S3Uri,
    local: Path,
    pairs: list[dict[str, Any]],
    card: dict[str, Any],
    parts: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """pairs.jsonl and the data card, then the manifest (keys, sizes, sha256) last; returns pairs.jsonl's entry.

    ``parts`` are the entries of the saved parts of model-based generators (already stored): the generators'
    raw output, before the filters, kept for a reader who wants to see what the filters dropped."""
    local.mkdir(parents=True, exist_ok=True)
    files = {
        PAIRS_FILE: "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs).encode(),
        DATA_CARD: json.dumps(card, indent=2, ensure_ascii=False).encode(),
    }
    objects = []
    for name, data in files.items():
        (local / name).write_bytes(data)
        storage.put_bytes(data, prefix.join(name), "application/json")
        objects.append({"key": name, "size": len(data), "sha256": _sha(data)})
    objects += sorted(parts, key=lambda o: str(o["key"]))
    manifest = json.dumps({"hash": card["hash"], "prefix": str(prefix), "objects": objects}, indent=2).encode()
    storage.put_bytes(manifest, prefix.join(MANIFEST))
    (local / MANIFEST).write_bytes(manifest)
    log.info("published the dataset (%d pairs) under %s", len(pairs), prefix)
    return {"uri": str(prefix.join(PAIRS_FILE)), "bytes": objects[0]["size"], "sha256": objects[0]["sha256"]}


# ---------------------------------------------------------------- making pairs


#: The data card lists at most this many refused files by name (all of them are counted).
REFUSED_LISTED = 100


@dataclass
class Reading:
    """The documents read, and the files refused with their reason (``overFileLimit``, ``overTotalLimit``,
    ``tooDeep``): refused files are counted, never fatal."""

    docs: list[Document] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)

    def refuse(self, key: str, size: int, reason: str, detail: str) -> None:
        log.warning("refused the document %s (%d bytes): %s", key, size, detail)
        self.refused.append({"key": key, "bytes": size, "reason": reason})

    def counts(self) -> dict[str, Any]:
        """The data card's refusal counts by reason, and the first refused files by name."""
        return {
            "documentsRefused": dict(Counter(r["reason"] for r in self.refused)),
            "refused": self.refused[:REFUSED_LISTED],
        }


def read_documents(
    cfg: RunConfig, storage: Store, base: S3Uri, listing: list[tuple[str, int, str]], dest: Path
) -> Reading:
    """Every listed document within the caps: a file over ``limits.maxFileBytes`` (by its listed size, then
    by what was downloaded) is refused unread, and once ``limits.maxTotalBytes`` would be passed every
    further file is refused."""
    if dest.exists():
        shutil.rmtree(dest)
    tr, g = cfg.spec.data.train, cfg.spec.data.generate
    assert g is not None
    cap, budget = g.limits.max_file_bytes, g.limits.max_total_bytes
    out = Reading()
    for key, size, _ in listing:
        uri = f"s3://{base.bucket}/{key}"
        if size > cap:
            out.refuse(uri, size, "overFileLimit", f"over data.generate.limits.maxFileBytes ({cap} bytes)")
            continue
        if size > budget:
            out.refuse(
                uri,
                size,
                "overTotalLimit",
                f"past data.generate.limits.maxTotalBytes ({g.limits.max_total_bytes} bytes in all)",
            )
            budget = -1  # no further file is read
            continue
        budget -= size
        rel = key[len(base.key) :] if key.startswith(base.key) else key.rsplit("/", 1)[-1]
        path = dest / rel
        storage.download(S3Uri(base.bucket, key), path)
        try:
            out.docs += read_document(path, uri, tr.document_type, tr.columns.text, cap)
        except Refused as exc:
            out.refuse(uri, path.stat().st_size, exc.reason, str(exc))
    return out


class Parts:
    """Saved parts of a model-based generator's output under ``datasets/<hash>/parts/``, so that a pod killed
    half-way resumes from its last saved part (the hash makes a part valid only for the same settings)."""

    def __init__(self, storage: Store, prefix: S3Uri, local: Path) -> None:
        self.storage, self.prefix, self.local = storage, prefix, local / "parts"
        #: The manifest's entries ({key, size, sha256}) of the parts this run used, saved or resumed.
        self.objects: list[dict[str, Any]] = []

    def get(self, name: str) -> list[Pair] | None:
        if not self.storage.exists(self.prefix.join(f"parts/{name}")):
            return None
        data = self.storage.get_bytes(self.prefix.join(f"parts/{name}"))
        self._used(name, data)
        return [Pair(**json.loads(line)) for line in data.decode().splitlines() if line.strip()]

    def put(self, name: str, pairs: list[Pair]) -> None:
        data = "".join(json.dumps(asdict(p), ensure_ascii=False) + "\n" for p in pairs).encode()
        self.local.mkdir(parents=True, exist_ok=True)
        (self.local / name).write_bytes(data)
        self.storage.put_bytes(data, self.prefix.join(f"parts/{name}"), "application/json")
        self._used(name, data)

    def _used(self, name: str, data: bytes) -> None:
        self.objects.append({"key": f"parts/{name}", "size": len(data), "sha256": _sha(data)})


def run_generator(gen: Generator, used: list[Chunk], n: int, parts: Parts | None) -> tuple[list[Pair], int]:
    """A generator over the chunks; model-based ones part by part, resuming from saved parts. (pairs, parts resumed)"""
    if parts is None or gen.name not in RESUMABLE:
        return gen.generate(used, n), 0
    out: list[Pair] = []
    resumed = 0
    for start in range(0, len(used), PART_CHUNKS):
        name = f"{gen.name}-{start // PART_CHUNKS:05d}.jsonl"
        saved = parts.get(name)
        if saved is None:
            saved = gen.generate(used[start : start + PART_CHUNKS], n)
            parts.put(name, saved)
        else:
            resumed += 1
        out += saved
    return out, resumed


def make_pairs(
    cfg: RunConfig,
    docs: list[Document],
    tok: Tokenizer,
    parts: Parts | None = None,
    locate: Callable[[str], str] | None = None,
    embed: Embed | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Chunk, sample, generate and filter: the pair records and the counts for the data card. ``embed`` (the
    base model's) is needed when the roundTrip or easiness filter is on."""
    g = cfg.spec.data.generate
    assert g is not None
    chunks: list[Chunk] = list(chunk_documents(docs, g.chunking.size, g.chunking.overlap, tok))
    used = chunks
    if len(chunks) > g.max_chunks:
        picked = sorted(random.Random(g.seed).sample(range(len(chunks)), g.max_chunks))
        used = [chunks[i] for i in picked]
    generators = build(g, locate)
    made = []
    stats: dict[str, Any] = {}
    for gen in generators:
        t0 = time.perf_counter()
        out, resumed = run_generator(gen, used, g.queries_per_chunk, parts)
        stats[gen.name] = {"pairs": len(out), "seconds": round(time.perf_counter() - t0, 3), **gen.stats()}
        if resumed:
            stats[gen.name]["partsResumed"] = resumed
        made += out
        log.info("generator %s made %d pairs from %d chunks", gen.name, len(out), len(used))
    kept, dropped = apply(made, g.filter)
    counts: dict[str, Any] = {
        "chunks": len(chunks),
        "chunksUsed": len(used),
        "chunkTokensMax": max((c.tokens for c in chunks), default=0),
        "pairsGenerated": len(made),
    }
    if uses_model(g.filter):
        if embed is None:
            raise ValueError("spec.data.generate.filter roundTrip and easiness need the base model (embed)")
        kept, more, counts["modelFilter"] = filter_embedded(kept, used, g.filter, embed)
        dropped.update(more)
    counts |= {
        "pairs": len(kept),
        "dropped": dict(dropped),
        "generatorStats": stats,
        "requests": sum(int(s.get("requests", 0)) for s in stats.values()),
    }
    return [p.record() for p in kept], counts


def filter_embedded(
    pairs: list[Pair], used: list[Chunk], spec: GenerateFilter, embed: Embed
) -> tuple[list[Pair], Counter[str], dict[str, Any]]:
    """The round-trip and easiness filters: every chunk that got queries, every positive that is not a chunk's
    text (inverseCloze's) and every query embedded once, then :func:`filters.apply_embedded`."""
    t0 = time.perf_counter()
    row = {c.id: i for i, c in enumerate(used)}
    texts = {c.text: i for i, c in enumerate(used)}
    extra = list(dict.fromkeys(p.positive for p in pairs if p.positive not in texts))
    docs = embed([c.text for c in used] + extra, "document")
    texts |= {t: len(used) + i for i, t in enumerate(extra)}
    queries = embed([p.query for p in pairs], "query")
    positives = docs[[texts[p.positive] for p in pairs]] if pairs else docs[:0]
    own = np.array([row.get(p.chunk, -1) for p in pairs], dtype=np.int64)
    kept, dropped, figures = apply_embedded(queries, positives, docs[: len(used)], own, spec)
    figures = {"pool": len(used), "embedded": len(docs) + len(pairs), **figures}
    figures["seconds"] = round(time.perf_counter() - t0, 3)
    log.info("the model filters kept %d of %d pairs (dropped %s)", len(kept), len(pairs), dict(dropped))
    return [pairs[i] for i in kept], dropped, figures


def model_embedder(model: Any, batch_size: int) -> Embed:
    """The base model's normalised embeddings (its query or document prompt and route, as evaluation uses)."""

    def embed(texts: list[str], task: str) -> Any:
        emb = encode(model, texts, batch_size, task=task) if texts else np.zeros((0, 1), dtype=np.float32)
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)

    return embed


def generate_dataset(cfg: RunConfig, storage: Store, work: Path, tokenizer: Any, model: Any = None) -> Generated:
    """Reuse the dataset of the same documents and settings, or make and publish it. ``model`` (the base
    model) is used only by the roundTrip and easiness filters."""
    g = cfg.spec.data.generate
    assert g is not None
    t0 = time.perf_counter()
    prompt = _prompt(cfg)
    base, listing = list_documents(cfg, storage)
    digest = dataset_hash(cfg, listing, prompt)
    prefix = dataset_prefix(cfg, digest)
    local = work / DATASETS_DIR / digest
    found = load_dataset(storage, prefix)
    if found is not None:
        pairs, card, entry = found
        log.info("reused the dataset %s (%d pairs): no document read, no generator called", prefix, len(pairs))
        return Generated(pairs, card, str(prefix), reused=True, pairs_file=entry)
    reading = read_documents(cfg, storage, base, listing, work / "documents")
    docs = reading.docs
    if not docs:
        refused = (
            f" ({len(reading.refused)} refused: {reading.counts()['documentsRefused']})" if reading.refused else ""
        )
        raise InvalidCorpus(
            f"spec.data.train.uri {cfg.spec.data.train.uri}: none of the {len(listing)} files holds text{refused}"
        )
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer.of(tokenizer)
    parts = Parts(storage, prefix, local)
    embed = model_embedder(model, cfg.spec.evaluation.batch_size) if model is not None else None
    pairs, counts = make_pairs(cfg, docs, tok, parts, _locator(cfg, storage, work), embed)
    if not pairs:
        raise InvalidCorpus(
            f"no pairs were generated from {len(docs)} documents ({counts['chunks']} chunks; dropped "
            f"{counts['dropped']}): check the documents and spec.data.generate"
        )
    card = {
        "hash": digest,
        "createdByRun": cfg.run.run_id,
        "version": GENERATION_VERSION,
        "documents": [{"key": k, "bytes": s, "etag": e} for k, s, e in listing],
        "documentsListed": len(listing),
        "documentsRead": len(docs),
        "documentsEmpty": len(listing) - len(reading.refused) - len({d.key.split("#", 1)[0] for d in docs}),
        **reading.counts(),
        "generate": dump_spec(cfg.spec)["data"]["generate"],
        "tokenizer": cfg.spec.model.base,
        "generators": g.generator.names,
        "prompt": prompt,
        **counts,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    entry = publish_dataset(storage, prefix, local, pairs, card, parts.objects)
    return Generated(pairs, card, str(prefix), reused=False, pairs_file=entry)


def _locator(cfg: RunConfig, storage: Store, work: Path) -> Callable[[str], str]:
    """Where a generator's model is: s3:// prefixes are downloaded; modelCacheDir maps hub ids to folders."""

    def locate(model: str) -> str:
        if model.startswith("s3://"):
            dest = work / "generator-model"
            if dest.exists():
                shutil.rmtree(dest)
            storage.download_tree(S3Uri.parse(model if model.endswith("/") else model + "/"), dest, allow_object=False)
            return str(dest)
        cache = cfg.settings.model_cache_dir
        return str(Path(cache) / model) if cache and (Path(cache) / model).is_dir() else model

    return locate


def _prompt(cfg: RunConfig) -> str | None:
    g = cfg.spec.data.generate
    if g is None or g.generator.llm is None:
        return None
    return prompt_template()


# ---------------------------------------------------------------- evaluation split


def split_by_documents(
    pairs: list[dict[str, Any]], fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """A seeded held-out fraction of documents (at least one, and one left to train on): every pair of a
    held-out document is in the evaluation set, none in training."""
    docs = sorted({p["doc"] for p in pairs})
    if len(docs) < 2:
        raise InvalidCorpus(
            f"only {len(docs)} document has pairs: hold-out evaluation needs two or more; add documents or "
            "set spec.data.eval.uri"
        )
    random.Random(seed).shuffle(docs)
    n = min(len(docs) - 1, max(1, round(fraction * len(docs))))
    held = set(docs[:n])
    train = [p for p in pairs if p["doc"] not in held]
    ev = [p for p in pairs if p["doc"] in held]
    return train, ev, {"by": "documents", "evalDocuments": n, "trainDocuments": len(docs) - n}


def generate_stage(cfg: RunConfig, storage: Store, work: Path, tokenizer: Any, model: Any = None) -> Generated:
    """Generate (or reuse) the pairs, then split them for evaluation (or read data.eval.uri)."""
    gen = generate_dataset(cfg, storage, work, tokenizer, model)
    ev_spec = cfg.spec.data.eval
    if ev_spec.uri:
        dest = work / "data" / "eval"
        if dest.exists():
            shutil.rmtree(dest)
        files = fetch(storage, ev_spec.uri, dest)
        gen.eval_files = [{"uri": ev_spec.uri, "bytes": f.stat().st_size, "sha256": sha256_file(f)} for f in files]
        rows = D.read_files(
            files, "jsonl", dest, base_uri=base_uri(ev_spec.uri), what="the evaluation data (spec.data.eval.uri)"
        )
        gen.eval, _ = D.drop_duplicates(
            D.map_and_check(rows, DataFormat.PAIRS, cfg.spec.data.train.columns), DataFormat.PAIRS
        )
        gen.train = [dict(p) for p in gen.pairs]
        split: dict[str, Any] = {"by": "data.eval.uri", "evalRows": len(gen.eval)}
    else:
        gen.train, gen.eval, split = split_by_documents(gen.pairs, ev_spec.held_out_fraction, ev_spec.seed)
    gen.stats = {
        "generatedPairs": len(gen.pairs),
        "datasetReused": gen.reused,
        "dataset": gen.dataset_uri,
        "split": split,
    }
    return gen
