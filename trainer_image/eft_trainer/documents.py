"""Documents in, sections out: text extraction by file type, then chunking on structure before tokens.

* :func:`read_document` reads one file (PDF, HTML, Markdown, reStructuredText, plain text, or JSON lines
  with a text column) into :class:`Document` s: a title and sections, each with its path (document title >
  headings) and paragraphs. The type comes from the extension unless ``spec.data.train.documentType``
  says otherwise; each type has its own module under :mod:`eft_trainer.extract`, built on the format's own
  parser and linear in the input. A file that cannot be read as its type raises :class:`InvalidCorpus`
  naming it; a file over the size cap, or nested deeper than its parser follows, raises :class:`Refused`
  with the reason, which the caller counts (documents are untrusted input: a refused file never stops a run).
* :func:`chunk_documents` splits each section on paragraphs, then sentences, then tokens of the base
  model's own tokenizer (only for a sentence longer than a chunk), packing units into chunks of at most
  ``size`` tokens with about ``overlap`` tokens repeated between neighbours; each chunk keeps its path.

Pure apart from reading the file (at most the cap plus one byte of it); the tokenizer is passed in (a
``count`` and a ``split`` function).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from eft_api.spec import DocumentType
from eft_trainer.errors import InvalidCorpus
from eft_trainer.extract.base import Document, Section, TooDeep
from eft_trainer.extract.html import read_html
from eft_trainer.extract.markdown import read_markdown
from eft_trainer.extract.pdf import read_pdf
from eft_trainer.extract.plain import read_jsonl, read_plain
from eft_trainer.extract.rst import read_rst

__all__ = [
    "EXTENSIONS", "Chunk", "Document", "Refused", "Section", "Tokenizer", "chunk_documents", "chunk_section",
    "document_type", "read_document", "sentences", "whitespace_tokenizer",
]  # fmt: skip


@dataclass(frozen=True)
class Chunk:
    id: str
    doc: str
    path: tuple[str, ...]
    text: str
    tokens: int


class Refused(Exception):
    """A document not read, for a reason the data card counts: ``overFileLimit``, ``overTotalLimit``,
    ``tooDeep``."""

    def __init__(self, key: str, reason: str, detail: str) -> None:
        super().__init__(f"{key}: {detail}")
        self.key, self.reason = key, reason


# ---------------------------------------------------------------- types


EXTENSIONS: dict[str, DocumentType] = {
    ".pdf": DocumentType.PDF,
    ".html": DocumentType.HTML,
    ".htm": DocumentType.HTML,
    ".xhtml": DocumentType.HTML,
    ".md": DocumentType.MARKDOWN,
    ".markdown": DocumentType.MARKDOWN,
    ".rst": DocumentType.RESTRUCTURED_TEXT,
    ".rest": DocumentType.RESTRUCTURED_TEXT,
    ".jsonl": DocumentType.JSONL,
    ".ndjson": DocumentType.JSONL,
    ".txt": DocumentType.TEXT,
}

_ADORNMENTS = frozenset("=-~^*#+\"'`:.")


def document_type(name: str, head: str = "") -> DocumentType:
    """The type of a file by its extension (``x.rst.txt`` is reStructuredText; ``.txt`` with reST headings too)."""
    lower = name.lower()
    if lower.endswith(".rst.txt"):
        return DocumentType.RESTRUCTURED_TEXT
    kind = EXTENSIONS.get(Path(lower).suffix, DocumentType.TEXT)
    if kind is DocumentType.TEXT and head and _has_rst_heading(head.splitlines()[:200]):
        return DocumentType.RESTRUCTURED_TEXT
    return kind


def _underline(line: str) -> bool:
    """A row of three or more of one punctuation character (a reST heading's underline)."""
    s = line.rstrip()
    return len(s) >= 3 and s[0] in _ADORNMENTS and s.count(s[0]) == len(s)


def _has_rst_heading(lines: Sequence[str]) -> bool:
    return any(
        _underline(lines[i]) and lines[i - 1].strip() and len(lines[i].rstrip()) >= len(lines[i - 1].rstrip())
        for i in range(1, len(lines))
    )


def _text(data: bytes, key: str) -> str:
    if b"\x00" in data[:65536]:
        raise InvalidCorpus(f"{key}: a binary file (it holds NUL bytes), not text: fix its extension or remove it")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InvalidCorpus(f"{key}: line {line}: not UTF-8 text (byte offset {exc.start})") from None


def read_bounded(path: Path, key: str, max_bytes: int | None) -> bytes:
    """The file's bytes, reading at most ``max_bytes`` + 1 of them: :class:`Refused` when it is larger."""
    with path.open("rb") as f:
        data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise Refused(key, "overFileLimit", f"larger than the {max_bytes}-byte cap (spec.data.generate.limits)")
    return data


def read_document(
    path: Path,
    key: str,
    kind: DocumentType | None = None,
    text_column: str = "text",
    max_bytes: int | None = None,
) -> list[Document]:
    """The documents of one file (JSON lines give one per line); empty ones are left out."""
    data = read_bounded(path, key, max_bytes)
    if kind is None:
        kind = DocumentType.PDF if data[:5] == b"%PDF-" else None
    if kind is DocumentType.PDF or (kind is None and path.suffix.lower() == ".pdf"):
        return [d for d in [read_pdf(data, key, _stem(key))] if d.sections]
    text = _text(data, key)
    kind = kind or document_type(key, text[:20000])
    title = _stem(key)
    if kind is DocumentType.JSONL:
        return read_jsonl(text, key, text_column, _stem(key))
    reader = {
        DocumentType.HTML: read_html,
        DocumentType.MARKDOWN: read_markdown,
        DocumentType.RESTRUCTURED_TEXT: read_rst,
        DocumentType.TEXT: read_plain,
    }[kind]
    try:
        doc = reader(text, key, title)
    except TooDeep as exc:
        raise Refused(key, "tooDeep", str(exc).split(": ", 1)[-1]) from None
    return [doc] if doc.sections else []


def _stem(key: str) -> str:
    name = key.rsplit("/", 1)[-1]
    for suffix in (".rst.txt", *EXTENSIONS):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


# ---------------------------------------------------------------- chunking

# ---------------------------------------------------------------- sentences (the one splitter: chunking, pre-training)

#: A sentence ends at . ! or ? (closing quotes or brackets may follow), before whitespace and a capital or digit.
_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_PARAGRAPHS = re.compile(r"\n\s*\n")
#: Words after which a full stop does not end a sentence: in any case ...
_ABBREVIATIONS_ANY_CASE = frozenset({"e.g.", "i.e.", "etc.", "vs.", "cf.", "approx."})
#: ... and titles and labels capitalised only (a lower-case "no." ends a sentence).
_ABBREVIATIONS_CAPITALISED = frozenset({"Mr.", "Mrs.", "Dr.", "No.", "Fig."})


def abbreviated(before: str) -> bool:
    """Whether ``before`` (the text up to a full stop) ends with an abbreviation or an initial (``J.``) that is a
    word of its own (``e.g.``, ``(e.g.``; not ``bee.g.``). Pure."""
    words = before.rsplit(None, 1)  # from the right: the last word only, so a long paragraph stays linear
    word = words[-1].lstrip("\"'([") if words else ""
    initial = len(word) == 2 and word[0].isalpha() and word[1] == "."
    return initial or word.lower() in _ABBREVIATIONS_ANY_CASE or word in _ABBREVIATIONS_CAPITALISED


def sentences(paragraph: str) -> list[str]:
    """The sentences of one paragraph: cut after . ! or ? (and any closing quote or bracket) before whitespace and
    a capital or a digit, unless the full stop ends an abbreviation or an initial. The text is kept as it is
    (only each sentence's ends are stripped). Linear in the text (no backtracking). Pure."""
    out: list[str] = []
    start = 0
    for m in _BOUNDARY.finditer(paragraph):
        if abbreviated(paragraph[start : m.start()]):
            continue
        out.append(paragraph[start : m.end()].strip())
        start = m.end()
    out.append(paragraph[start:].strip())
    return [s for s in out if s]


def split_sentences(text: str) -> list[str]:
    """The sentences of a text of several paragraphs: paragraphs (blank lines) joined into one line each
    (whitespace runs become one space), then :func:`sentences`. Pure."""
    return [s for para in _PARAGRAPHS.split(text) for s in sentences(" ".join(para.split()))]


@dataclass(frozen=True)
class Tokenizer:
    """What chunking needs of the base model's tokenizer: counts, and a split for an over-long sentence."""

    count: Callable[[list[str]], list[int]]
    split: Callable[[str, int], list[str]]
    special: int = 2

    @classmethod
    def of(cls, tokenizer: object) -> Tokenizer:
        tok = tokenizer

        def count(texts: list[str]) -> list[int]:
            if not texts:
                return []
            enc = tok(texts, add_special_tokens=False, truncation=False)  # type: ignore[operator]
            return [len(ids) for ids in enc["input_ids"]]

        def split(text: str, size: int) -> list[str]:
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False)  # type: ignore[operator]
            offsets = enc["offset_mapping"]
            out = []
            for start in range(0, len(offsets), size):
                window = offsets[start : start + size]
                out.append(text[window[0][0] : window[-1][1]].strip())
            return [o for o in out if o]

        special = len(tok("", add_special_tokens=True)["input_ids"])  # type: ignore[operator]
        return cls(count, split, special)


def whitespace_tokenizer() -> Tokenizer:
    """Words as tokens: for tests and benchmarks that must not load a model."""

    def split(text: str, size: int) -> list[str]:
        words = text.split()
        return [" ".join(words[i : i + size]) for i in range(0, len(words), size)]

    return Tokenizer(lambda texts: [len(t.split()) for t in texts], split, 0)


def _units(paragraphs: list[str], budget: int, tok: Tokenizer) -> list[tuple[str, int]]:
    """Paragraphs as they are when they fit, else their sentences, else token windows of a sentence."""
    out: list[tuple[str, int]] = []
    counts = tok.count(paragraphs)
    for para, n in zip(paragraphs, counts, strict=True):
        if n <= budget:
            out.append((para, n))
            continue
        sents = sentences(para)
        for sent, m in zip(sents, tok.count(sents), strict=True):
            if m <= budget:
                out.append((sent, m))
            else:
                pieces = tok.split(sent, budget)
                out.extend(zip(pieces, tok.count(pieces), strict=True))
    return out


def chunk_section(units: list[tuple[str, int]], budget: int, overlap: int) -> list[tuple[str, int]]:
    """Pack units greedily into chunks of at most ``budget`` tokens; the next chunk starts with the last
    units of the previous one that fit in ``overlap`` tokens (whole units: no sentence is cut for overlap)."""
    chunks: list[tuple[str, int]] = []
    cur: list[tuple[str, int]] = []
    total = 0
    fresh = 0  # units of cur not already in the previous chunk
    for unit in units:
        if cur and total + unit[1] + 1 > budget:
            if fresh:
                chunks.append((" ".join(u[0] for u in cur), total))
            carry: list[tuple[str, int]] = []
            kept = 0
            for u in reversed(cur):
                if kept + u[1] > overlap or kept + u[1] + unit[1] + 1 > budget:
                    break
                carry.insert(0, u)
                kept += u[1] + 1
            cur, total, fresh = carry, kept, 0
        cur.append(unit)
        total += unit[1] + (1 if len(cur) > 1 else 0)
        fresh += 1
    if cur and fresh:
        chunks.append((" ".join(u[0] for u in cur), total))
    return chunks


def chunk_documents(docs: Iterable[Document], size: int, overlap: int, tok: Tokenizer) -> Iterator[Chunk]:
    """Chunks of every section of every document, in order, with ids ``<key>#<n>``."""
    budget = max(8, size - tok.special)
    for doc in docs:
        n = 0
        for section in doc.sections:
            for text, tokens in chunk_section(_units(section.paragraphs, budget, tok), budget, overlap):
                yield Chunk(f"{doc.key}#{n}", doc.key, section.path, text, tokens)
                n += 1
