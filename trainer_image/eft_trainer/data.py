"""Load and check (preflight) a corpus, split it, and build the retrieval evaluation set.

Everything here except the file readers is pure and works on lists of dicts, so the rules are tested by
tables. Rows are mapped to canonical column names per format:

* pairs: ``anchor``, ``positive``
* triplets: ``anchor``, ``positive``, ``negative_1`` .. ``negative_n``
* scored-pairs: ``sentence1``, ``sentence2``, ``score``
* labeled-texts: ``text``, ``label``
* beir: training pairs (``anchor``, ``positive``) from ``qrels/train.tsv``, plus the corpus and queries.
* parallel: ``anchor`` (the source text), ``positive`` (its translation): evaluated as translated-text
  retrieval (each held-out source is a query, its translation the relevant document), as pairs are.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from eft_api.spec import Columns, DataFormat, EvalData
from eft_trainer.errors import InvalidCorpus

MAX_LINE_BYTES = 4 * 1024 * 1024
MAX_PROBLEMS_SHOWN = 8


@dataclass
class Row:
    """One record with where it came from (file name and 1-based line, or row for parquet)."""

    data: dict[str, Any]
    file: str
    line: int


@dataclass
class Problems:
    items: list[str] = field(default_factory=list)

    def add(self, where: str, what: str) -> None:
        self.items.append(f"{where}: {what}")

    def raise_if_any(self, what: str) -> None:
        if self.items:
            shown = "; ".join(self.items[:MAX_PROBLEMS_SHOWN])
            more = f" (and {len(self.items) - MAX_PROBLEMS_SHOWN} more)" if len(self.items) > MAX_PROBLEMS_SHOWN else ""
            raise InvalidCorpus(f"{what}: {len(self.items)} problem(s): {shown}{more}")


# ---------------------------------------------------------------- readers (file I/O)


def bounded_lines(f: IO[bytes]) -> Iterator[tuple[bytes, int]]:
    """(line, its size) for each line of ``f``, holding at most ``MAX_LINE_BYTES`` + 1 bytes of a line in memory:
    a longer line is skipped in blocks and given as (b"", its size), for the caller to report."""
    while raw := f.readline(MAX_LINE_BYTES + 1):
        size = len(raw)
        if size > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while (more := f.readline(1 << 20)) and not more.endswith(b"\n"):
                size += len(more)
            yield b"", size + len(more)
        else:
            yield raw, size


def _too_long(size: int) -> str:
    return f"line is {size / 1e6:.1f} MB, over the {MAX_LINE_BYTES // 2**20} MB limit"


def read_jsonl(path: Path, problems: Problems, label: str | None = None) -> list[Row]:
    """JSON lines; a UTF-8 BOM and CRLF endings are tolerated; bad lines are reported by number."""
    name = label or path.name
    rows: list[Row] = []
    with path.open("rb") as f:
        for n, (raw, size) in enumerate(bounded_lines(f), start=1):
            if size > MAX_LINE_BYTES:
                problems.add(f"{name}:{n}", _too_long(size))
                continue
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.add(f"{name}:{n}", f"invalid UTF-8 at byte {exc.start}")
                continue
            text = text.strip()
            if not text:
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                problems.add(f"{name}:{n}", f"not valid JSON ({json_problem(exc)})")
                continue
            if not isinstance(obj, dict):
                problems.add(f"{name}:{n}", f"expected a JSON object, got {type(obj).__name__}")
                continue
            rows.append(Row(obj, name, n))
    return rows


def json_problem(exc: json.JSONDecodeError) -> str:
    """``exc``'s message with its column ("Unterminated string starting at column 12", not "at at")."""
    msg = exc.msg.removesuffix(" at").rstrip()
    return f"{msg} at column {exc.colno}"


def read_csv(path: Path, problems: Problems, label: str | None = None, delimiter: str = ",") -> list[Row]:
    name = label or path.name
    with path.open("rb") as f:  # line by line, each line bounded: the file is never held whole here
        for n, (line, size) in enumerate(bounded_lines(f), start=1):
            if size > MAX_LINE_BYTES:
                problems.add(f"{name}:{n}", _too_long(size))
                continue
            try:
                line.removeprefix(b"\xef\xbb\xbf" if n == 1 else b"").decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.add(f"{name}:{n}", f"invalid UTF-8 at byte {exc.start}")
    if problems.items:
        return []
    if delimiter == ",":
        # Read with `datasets` (as a Job does for large files); line numbers: header is line 1.
        import datasets

        ds = datasets.load_dataset("csv", data_files=str(path), split="train", keep_default_na=False)
        return [Row(dict(r), name, i + 2) for i, r in enumerate(ds)]
    with path.open(encoding="utf-8-sig", newline="") as text:
        reader = csv.DictReader(text, delimiter=delimiter)
        return [Row(dict(r), name, i + 2) for i, r in enumerate(reader)]


def read_parquet(path: Path, problems: Problems, label: str | None = None) -> list[Row]:
    import datasets

    name = label or path.name
    try:
        ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
    except Exception as exc:
        problems.add(name, f"not a readable parquet file ({type(exc).__name__})")
        return []
    return [Row(dict(r), name, i + 1) for i, r in enumerate(ds)]


def read_files(
    paths: Sequence[Path],
    file_type: str,
    root: Path | None = None,
    *,
    base_uri: str = "",
    what: str = "the corpus",
) -> list[Row]:
    """Read every data file; InvalidCorpus naming file and line when any is malformed, or when none has rows.

    A file is named by its path under ``root``, after ``base_uri`` (the S3 prefix it came from) when given;
    ``what`` names the data in the error ("the corpus", "the evaluation data (spec.data.eval.uri)").
    """
    problems = Problems()
    rows: list[Row] = []
    files = [p for p in paths if p.suffix.lower() in _SUFFIXES[file_type]] or list(paths)
    for p in sorted(files):
        rel = p.relative_to(root).as_posix() if root and p.is_relative_to(root) else p.name
        label = base_uri + rel
        if file_type == "jsonl":
            rows += read_jsonl(p, problems, label)
        elif file_type == "csv":
            rows += read_csv(p, problems, label)
        else:
            rows += read_parquet(p, problems, label)
    problems.raise_if_any(f"{what} is malformed")
    if not rows:
        names = ", ".join(base_uri + p.name for p in files) or "(no files)"
        raise InvalidCorpus(f"{what} is empty: no rows in {names}")
    return rows


_SUFFIXES = {"jsonl": {".jsonl", ".json", ".ndjson"}, "csv": {".csv"}, "parquet": {".parquet"}}


# ---------------------------------------------------------------- column mapping and checks (pure)


def column_map(fmt: DataFormat, cols: Columns) -> dict[str, str]:
    """canonical name -> the user's column name."""
    if fmt in (DataFormat.PAIRS, DataFormat.BEIR):
        return {"anchor": cols.anchor, "positive": cols.positive}
    if fmt is DataFormat.TRIPLETS:
        out = {"anchor": cols.anchor, "positive": cols.positive}
        out.update({f"negative_{i + 1}": c for i, c in enumerate(cols.negatives)})
        return out
    if fmt is DataFormat.SCORED_PAIRS:
        return {"sentence1": cols.text1, "sentence2": cols.text2, "score": cols.score}
    if fmt is DataFormat.PARALLEL:
        return {"anchor": cols.source, "positive": cols.translation}
    return {"text": cols.text, "label": cols.label}


def map_and_check(
    rows: Sequence[Row],
    fmt: DataFormat,
    cols: Columns,
    *,
    what: str = "the corpus",
    columns_field: str = "spec.data.train.columns",
) -> list[dict[str, Any]]:
    """Apply the column mapping and check every row; InvalidCorpus lists missing columns, empty texts, bad scores.

    ``what`` names the data and ``columns_field`` the spec field whose mapping applies, in the error.
    """
    mapping = column_map(fmt, cols)
    problems = Problems()
    out: list[dict[str, Any]] = []
    for r in rows:
        where = f"{r.file}:{r.line}"
        missing = [user for user in mapping.values() if user not in r.data]
        if missing:
            have = ", ".join(sorted(r.data)[:10])
            problems.add(where, f"missing column(s) {', '.join(missing)} (the row has: {have}); see {columns_field}")
            continue
        rec: dict[str, Any] = {}
        ok = True
        for canon, user in mapping.items():
            value = r.data[user]
            if canon == "score":
                try:
                    rec[canon] = float(value)
                except (TypeError, ValueError):
                    problems.add(where, f"column {user} must be a number, got {str(value)[:40]!r}")
                    ok = False
            elif canon == "label":
                if value is None or (isinstance(value, str) and not value.strip()):
                    problems.add(where, f"column {user} (label) is empty")
                    ok = False
                rec[canon] = value
            else:
                if not isinstance(value, str):
                    problems.add(where, f"column {user} must be text, got {type(value).__name__}")
                    ok = False
                elif not value.strip():
                    problems.add(where, f"column {user} is empty")
                    ok = False
                rec[canon] = value
        if ok:
            out.append(rec)
    problems.raise_if_any(f"{what} has bad rows")
    return out


@dataclass
class CleanStats:
    rows_read: int = 0
    duplicates_dropped: int = 0
    same_text_dropped: int = 0
    rows_kept: int = 0


def drop_duplicates(records: Iterable[dict[str, Any]], fmt: DataFormat) -> tuple[list[dict[str, Any]], CleanStats]:
    """Drop exact duplicate rows and pairs whose positive equals the anchor (whitespace-trimmed); counted."""
    stats = CleanStats()
    seen: set[str] = set()
    out = []
    for rec in records:
        stats.rows_read += 1
        if fmt in (DataFormat.PAIRS, DataFormat.TRIPLETS, DataFormat.BEIR, DataFormat.PARALLEL) and (
            rec["anchor"].strip() == rec["positive"].strip()
        ):
            stats.same_text_dropped += 1
            continue
        key = json.dumps(rec, sort_keys=True, ensure_ascii=False, default=str)
        if key in seen:
            stats.duplicates_dropped += 1
            continue
        seen.add(key)
        out.append(rec)
    stats.rows_kept = len(out)
    return out, stats


def group_key(rec: dict[str, Any], fmt: DataFormat) -> str:
    """The text that identifies a query: rows sharing it stay on the same side of the split."""
    if fmt is DataFormat.SCORED_PAIRS:
        return str(rec["sentence1"]).strip()
    if fmt is DataFormat.LABELED_TEXTS:
        return str(rec["text"]).strip()
    return str(rec["anchor"]).strip()


def split_held_out(
    records: Sequence[dict[str, Any]], fmt: DataFormat, fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Deterministic held-out split by query (group), so no query lands on both sides."""
    groups: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        groups.setdefault(group_key(rec, fmt), []).append(i)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    n_eval = max(1, round(fraction * len(keys)))
    if len(keys) < 2:
        raise InvalidCorpus(f"the corpus has {len(keys)} distinct queries: too few to hold out an evaluation split")
    eval_keys = set(keys[:n_eval])
    train = [r for i, r in enumerate(records) if group_key(r, fmt) not in eval_keys]
    ev = [r for i, r in enumerate(records) if group_key(r, fmt) in eval_keys]
    return train, ev


def remove_leakage(
    train: Sequence[dict[str, Any]], ev: Sequence[dict[str, Any]], fmt: DataFormat
) -> tuple[list[dict[str, Any]], int]:
    """Drop training rows whose query is also an evaluation query; return them counted."""
    eval_queries = {group_key(r, fmt) for r in ev}
    kept = [r for r in train if group_key(r, fmt) not in eval_queries]
    return kept, len(train) - len(kept)


# ---------------------------------------------------------------- evaluation set (pure)


@dataclass
class IRSet:
    """A retrieval evaluation: query id -> text, corpus id -> text, query id -> relevant corpus ids."""

    queries: dict[str, str]
    corpus: dict[str, str]
    relevant: dict[str, set[str]]
    #: corpus ids never to return for a query (the query's own text in labeled-texts).
    exclude: dict[str, set[str]] = field(default_factory=dict)
    #: What the corpus is made of: ``corpusPositives`` (held-out positives), ``corpusNegatives`` (held-out
    #: negatives, or scored-pairs texts below the threshold), ``corpusDistractors`` (training texts or unjudged
    #: BEIR documents added), ``distractorsAvailable`` (how many there were to draw from), ``corpusOther``
    #: (labeled-texts: every held-out text).
    composition: dict[str, int] = field(default_factory=dict)

    def stats(self) -> dict[str, int]:
        return {
            "queries": len(self.queries),
            "corpus": len(self.corpus),
            "relevantPairs": sum(len(v) for v in self.relevant.values()),
            **self.composition,
        }


class _CorpusBuilder:
    def __init__(self) -> None:
        self.ids: dict[str, str] = {}

    def add(self, text: str) -> str:
        if text not in self.ids:
            self.ids[text] = f"d{len(self.ids):08d}"
        return self.ids[text]

    def add_counted(self, texts: Iterable[str]) -> int:
        """Add texts; return how many were new to the corpus."""
        before = len(self.ids)
        for t in texts:
            self.add(t)
        return len(self.ids) - before

    def corpus(self) -> dict[str, str]:
        return {cid: text for text, cid in self.ids.items()}


def _distractors(texts: Iterable[str], cap: int, seed: int) -> list[str]:
    unique = sorted(set(texts))
    random.Random(seed).shuffle(unique)
    return unique[:cap]


def ir_from_pairs(
    ev: Sequence[dict[str, Any]], train: Sequence[dict[str, Any]], eval_spec: EvalData, negatives: bool = False
) -> IRSet:
    """Queries = eval anchors; corpus = eval positives (and negatives) + training positives as distractors.

    ``train`` is the training data as trained (after leakage removal): the positives of training rows removed
    because their query is an evaluation query are not distractors, since they answer that query.
    """
    cb = _CorpusBuilder()
    queries: dict[str, str] = {}
    relevant: dict[str, set[str]] = {}
    qids: dict[str, str] = {}
    for rec in ev:
        q = rec["anchor"]
        qid = qids.setdefault(q, f"q{len(qids):07d}")
        queries[qid] = q
        relevant.setdefault(qid, set()).add(cb.add(rec["positive"]))
    comp = {"corpusPositives": len(cb.ids), "corpusNegatives": 0}
    if negatives:
        comp["corpusNegatives"] = cb.add_counted(
            v for rec in ev for k, v in rec.items() if k.startswith("negative_") and isinstance(v, str) and v.strip()
        )
    available = {r["positive"] for r in train}
    comp["corpusDistractors"] = cb.add_counted(_distractors(available, eval_spec.max_distractors, eval_spec.seed))
    comp["distractorsAvailable"] = len(available)
    return IRSet(queries, cb.corpus(), relevant, composition=comp)


def ir_from_scored(ev: Sequence[dict[str, Any]], train: Sequence[dict[str, Any]], eval_spec: EvalData) -> IRSet:
    """Pairs scored at or above half the score range are (query, relevant); every eval text2 is in the corpus."""
    scores = [float(r["score"]) for r in ev]
    top = max(scores, default=1.0)
    threshold = 0.5 if top <= 1.0 else top / 2
    cb = _CorpusBuilder()
    queries: dict[str, str] = {}
    relevant: dict[str, set[str]] = {}
    qids: dict[str, str] = {}
    for rec in ev:
        cid = cb.add(rec["sentence2"])
        if float(rec["score"]) >= threshold:
            q = rec["sentence1"]
            qid = qids.setdefault(q, f"q{len(qids):07d}")
            queries[qid] = q
            relevant.setdefault(qid, set()).add(cid)
    comp = {"corpusPositives": len(set().union(*relevant.values())) if relevant else 0}
    comp["corpusNegatives"] = len(cb.ids) - comp["corpusPositives"]  # eval texts scored below the threshold
    available = {r["sentence2"] for r in train}
    comp["corpusDistractors"] = cb.add_counted(_distractors(available, eval_spec.max_distractors, eval_spec.seed))
    comp["distractorsAvailable"] = len(available)
    return IRSet(queries, cb.corpus(), relevant, composition=comp)


def ir_from_labeled(ev: Sequence[dict[str, Any]]) -> IRSet:
    """Each eval text is a query against the other eval texts; relevant = same label."""
    corpus = {f"d{i:08d}": str(r["text"]) for i, r in enumerate(ev)}
    by_label: dict[str, set[str]] = {}
    for i, r in enumerate(ev):
        by_label.setdefault(str(r["label"]), set()).add(f"d{i:08d}")
    queries: dict[str, str] = {}
    relevant: dict[str, set[str]] = {}
    exclude: dict[str, set[str]] = {}
    for i, r in enumerate(ev):
        own = f"d{i:08d}"
        others = by_label[str(r["label"])] - {own}
        if others:
            qid = f"q{i:07d}"
            queries[qid] = str(r["text"])
            relevant[qid] = others
            exclude[qid] = {own}
    return IRSet(queries, corpus, relevant, exclude, composition={"corpusOther": len(corpus)})


def ir_from_beir(
    corpus: dict[str, str], queries: dict[str, str], qrels: dict[str, dict[str, int]], eval_spec: EvalData
) -> IRSet:
    """Eval queries with their qrels; the corpus is every judged document plus up to maxDistractors others."""
    rel = {q: {d for d, s in docs.items() if s > 0 and d in corpus} for q, docs in qrels.items() if q in queries}
    rel = {q: d for q, d in rel.items() if d}
    judged = set().union(*rel.values()) if rel else set()
    others = sorted(set(corpus) - judged)
    random.Random(eval_spec.seed).shuffle(others)
    keep = sorted(judged) + others[: eval_spec.max_distractors]
    comp = {
        "corpusPositives": len(judged),
        "corpusDistractors": min(len(others), eval_spec.max_distractors),
        "distractorsAvailable": len(others),
    }
    return IRSet({q: queries[q] for q in sorted(rel)}, {d: corpus[d] for d in keep}, rel, composition=comp)


# ---------------------------------------------------------------- BEIR layout


@dataclass
class Beir:
    corpus: dict[str, str]
    queries: dict[str, str]
    train_qrels: dict[str, dict[str, int]]
    test_qrels: dict[str, dict[str, int]] | None


def read_qrels(path: Path, problems: Problems, label: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    with path.open("rb") as f:
        lines = list(bounded_lines(f))
    for n, (raw_line, size) in enumerate(lines, start=1):
        if size > MAX_LINE_BYTES:
            problems.add(f"{label}:{n}", _too_long(size))
            continue
        try:
            line = raw_line.removeprefix(b"\xef\xbb\xbf" if n == 1 else b"").decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.add(f"{label}:{n}", f"invalid UTF-8 at byte {exc.start}")
            continue
        parts = line.strip().split("\t")
        if not line.strip() or (n == 1 and parts[0] in ("query-id", "query_id", "qid")):
            continue
        if len(parts) < 2:
            problems.add(f"{label}:{n}", "expected query-id<TAB>corpus-id<TAB>score")
            continue
        try:
            score = int(float(parts[2])) if len(parts) > 2 else 1
        except ValueError:
            problems.add(f"{label}:{n}", f"score {parts[2]!r} is not a number")
            continue
        out.setdefault(parts[0], {})[parts[1]] = score
    return out


def read_beir(root: Path, *, require_train: bool = True) -> Beir:
    """A BEIR prefix. Training needs ``qrels/train.tsv``; an evaluation-only set (a guard) needs either qrels."""
    problems = Problems()
    for need in ("corpus.jsonl", "queries.jsonl", *(("qrels/train.tsv",) if require_train else ())):
        if not (root / need).is_file():
            problems.add(need, "missing: a beir prefix holds corpus.jsonl, queries.jsonl and qrels/train.tsv")
    if not require_train and not any((root / q).is_file() for q in ("qrels/test.tsv", "qrels/train.tsv")):
        problems.add("qrels/test.tsv", "missing: an evaluation set needs qrels/test.tsv (or qrels/train.tsv)")
    problems.raise_if_any("the beir corpus is incomplete")
    corpus: dict[str, str] = {}
    for r in read_jsonl(root / "corpus.jsonl", problems, "corpus.jsonl"):
        if "_id" not in r.data or "text" not in r.data:
            problems.add(f"{r.file}:{r.line}", "a corpus row needs _id and text")
            continue
        title = str(r.data.get("title") or "").strip()
        corpus[str(r.data["_id"])] = f"{title}. {r.data['text']}" if title else str(r.data["text"])
    queries: dict[str, str] = {}
    for r in read_jsonl(root / "queries.jsonl", problems, "queries.jsonl"):
        if "_id" not in r.data or not str(r.data.get("text") or "").strip():
            problems.add(f"{r.file}:{r.line}", "a query row needs _id and a non-empty text")
            continue
        queries[str(r.data["_id"])] = str(r.data["text"])
    has_train = (root / "qrels/train.tsv").is_file()
    train = read_qrels(root / "qrels/train.tsv", problems, "qrels/train.tsv") if has_train else {}
    test = (
        read_qrels(root / "qrels/test.tsv", problems, "qrels/test.tsv") if (root / "qrels/test.tsv").is_file() else None
    )
    problems.raise_if_any("the beir corpus is malformed")
    if require_train and not train:
        raise InvalidCorpus("qrels/train.tsv has no judgements")
    return Beir(corpus, queries, train, test)


def beir_pairs(b: Beir, qrels: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    return [
        {"anchor": b.queries[q], "positive": b.corpus[d]}
        for q, docs in sorted(qrels.items())
        if q in b.queries
        for d, s in sorted(docs.items())
        if s > 0 and d in b.corpus
    ]
