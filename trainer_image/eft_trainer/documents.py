"""Documents in, sections out: text extraction by file type, then chunking on structure before tokens.

* :func:`read_document` reads one file (PDF, HTML, Markdown, reStructuredText, plain text, or JSON lines
  with a text column) into :class:`Document` s: a title and sections, each with its path (document title >
  headings) and paragraphs. The type comes from the extension unless ``spec.data.train.documentType``
  says otherwise. A file that cannot be read as its type raises :class:`InvalidCorpus` naming it.
* :func:`chunk_documents` splits each section on paragraphs, then sentences, then tokens of the base
  model's own tokenizer (only for a sentence longer than a chunk), packing units into chunks of at most
  ``size`` tokens with about ``overlap`` tokens repeated between neighbours; each chunk keeps its path.

Pure apart from reading the file; the tokenizer is passed in (a ``count`` and a ``split`` function).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from eft_api.spec import DocumentType
from eft_trainer.errors import InvalidCorpus

# ---------------------------------------------------------------- the model


@dataclass
class Section:
    path: tuple[str, ...]
    paragraphs: list[str] = field(default_factory=list)


@dataclass
class Document:
    key: str
    title: str
    sections: list[Section]

    @property
    def chars(self) -> int:
        return sum(len(p) for s in self.sections for p in s.paragraphs)


@dataclass(frozen=True)
class Chunk:
    id: str
    doc: str
    path: tuple[str, ...]
    text: str
    tokens: int


class _Builder:
    """Collects headings and paragraphs into sections with their path."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.heads: list[tuple[int, str]] = []
        self.sections: list[Section] = [Section((title,))]

    def heading(self, level: int, text: str) -> None:
        text = _spaces(text)
        if not text:
            return
        if not self.heads and level == 1 and not any(s.paragraphs for s in self.sections):
            self.title = text  # the first top-level heading is the document's title
            self.heads = [(1, text)]
            self.sections = [Section((text,))]
            return
        self.heads = [(lv, t) for lv, t in self.heads if lv < level] + [(level, text)]
        path = tuple(t for _, t in self.heads)
        if path[0] != self.title:
            path = (self.title, *path)
        self.sections.append(Section(path))

    def paragraph(self, text: str) -> None:
        text = _spaces(text)
        if text:
            self.sections[-1].paragraphs.append(text)

    def document(self, key: str) -> Document:
        return Document(key, self.title, [s for s in self.sections if s.paragraphs])


_WS = re.compile(r"\s+")


def _spaces(text: str) -> str:
    return _WS.sub(" ", text).strip()


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

_RST_UNDERLINE = re.compile(r"^([=\-~^*#+\"'`:.])\1{2,}\s*$")


def document_type(name: str, head: str = "") -> DocumentType:
    """The type of a file by its extension (``x.rst.txt`` is reStructuredText; ``.txt`` with reST headings too)."""
    lower = name.lower()
    if lower.endswith(".rst.txt"):
        return DocumentType.RESTRUCTURED_TEXT
    kind = EXTENSIONS.get(Path(lower).suffix, DocumentType.TEXT)
    if kind is DocumentType.TEXT and head and _has_rst_heading(head.splitlines()[:200]):
        return DocumentType.RESTRUCTURED_TEXT
    return kind


def _has_rst_heading(lines: Sequence[str]) -> bool:
    return any(
        _RST_UNDERLINE.match(lines[i]) and lines[i - 1].strip() and len(lines[i].rstrip()) >= len(lines[i - 1].rstrip())
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


def read_document(path: Path, key: str, kind: DocumentType | None = None, text_column: str = "text") -> list[Document]:
    """The documents of one file (JSON lines give one per line); empty ones are left out."""
    data = path.read_bytes()
    if kind is None:
        kind = DocumentType.PDF if data[:5] == b"%PDF-" else None
    if kind is DocumentType.PDF or (kind is None and path.suffix.lower() == ".pdf"):
        return [d for d in [read_pdf(data, key)] if d.sections]
    text = _text(data, key)
    kind = kind or document_type(key, text[:20000])
    title = _stem(key)
    if kind is DocumentType.JSONL:
        return read_jsonl(text, key, text_column)
    reader = {
        DocumentType.HTML: read_html,
        DocumentType.MARKDOWN: read_markdown,
        DocumentType.RESTRUCTURED_TEXT: read_rst,
        DocumentType.TEXT: read_plain,
    }[kind]
    doc = reader(text, key, title)
    return [doc] if doc.sections else []


def _stem(key: str) -> str:
    name = key.rsplit("/", 1)[-1]
    for suffix in (".rst.txt", *EXTENSIONS):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_plain(text: str, key: str, title: str) -> Document:
    b = _Builder(title)
    for para in re.split(r"\n\s*\n", text):
        b.paragraph(para)
    return b.document(key)


def read_jsonl(text: str, key: str, column: str) -> list[Document]:
    docs = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidCorpus(f"{key}: line {n}: not JSON ({exc.msg})") from None
        if not isinstance(rec, dict) or not isinstance(rec.get(column), str):
            raise InvalidCorpus(f"{key}: line {n}: no text column {column!r} (set spec.data.train.columns.text)")
        title = rec.get("title") if isinstance(rec.get("title"), str) and rec.get("title") else f"{_stem(key)} {n}"
        b = _Builder(str(title))
        for para in re.split(r"\n\s*\n", rec[column]):
            b.paragraph(para)
        doc = b.document(f"{key}#{n}")
        if doc.sections:
            docs.append(doc)
    return docs


# ---- reStructuredText

_ROLE = re.compile(r":[A-Za-z][\w:+.-]*:`([^`]*)`")
_LINK = re.compile(r"`([^`<]+?)\s*<[^>]*>`__?")
_REF = re.compile(r"`([^`]+)`__?")
_FOOTNOTE = re.compile(r"\s*\[#?[\w-]*\]_")
_KEEP_ARGS = {
    "function", "method", "class", "data", "attribute", "exception", "decorator", "decoratormethod",
    "classmethod", "staticmethod", "opcode", "cmdoption", "option", "envvar", "describe", "pdbcommand",
    "coroutinefunction", "coroutinemethod", "abstractmethod", "audit-event", "productionlist",
}  # fmt: skip
_DROP_BLOCK = {
    "index", "module", "moduleauthor", "sectionauthor", "toctree", "highlight", "only", "contents",
    "include", "raw", "image", "figure", "currentmodule", "testsetup", "testcleanup", "literalinclude",
}  # fmt: skip


def _role(m: re.Match[str]) -> str:
    inner = m.group(1)
    inner = re.sub(r"\s*<[^>]*>$", "", inner) or inner
    if inner.startswith("~"):
        inner = inner[1:].rsplit(".", 1)[-1]
    return inner.lstrip("!")


def rst_inline(text: str) -> str:
    text = _ROLE.sub(_role, text)
    text = _LINK.sub(r"\1", text)
    text = _REF.sub(r"\1", text)
    text = _FOOTNOTE.sub("", text)
    text = text.replace("``", "").replace("**", "").replace("\\", "")
    if "*" in text:
        text = _EMPHASIS.sub(r"\1", text)
    return text.replace("::", ":")


_DIRECTIVE = re.compile(r"^\.\. ([\w:-]+)::\s*(.*)$")
_OPTION = re.compile(r"^:[\w -]+:( |$)")
_EMPHASIS = re.compile(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])")


def read_rst(text: str, key: str, title: str) -> Document:
    b = _Builder(title)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    styles: list[tuple[str, bool]] = []
    para: list[str] = []
    skip_indent: int | None = None

    def flush() -> None:
        if para:
            b.paragraph(rst_inline(" ".join(para)))
            para.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if stripped and indent <= skip_indent:
                skip_indent = None
            else:
                i += 1
                continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        # A heading: text underlined (and maybe overlined) by a row of one punctuation character.
        over = bool(_RST_UNDERLINE.match(stripped)) and i + 2 < len(lines) and lines[i + 2].strip() == stripped
        if over and lines[i + 1].strip():
            heading, ch, i_next = lines[i + 1].strip(), stripped[0], i + 3
        elif stripped and indent == 0 and _RST_UNDERLINE.match(nxt) and len(nxt.rstrip()) >= len(stripped):
            heading, ch, i_next = stripped, nxt.strip()[0], i + 2
            over = False
        else:
            heading = ""
        if heading and not _RST_UNDERLINE.match(heading):
            flush()
            style = (ch, over)
            if style not in styles:
                styles.append(style)
            b.heading(styles.index(style) + 1, rst_inline(heading))
            i = i_next
            continue
        if not stripped:
            flush()
        elif _RST_UNDERLINE.match(stripped):
            flush()  # a transition
        elif stripped.startswith(".. "):
            flush()
            m = _DIRECTIVE.match(stripped)
            if m is None or m.group(1) in _DROP_BLOCK:
                skip_indent = indent  # a comment, a target, or a directive whose body is not prose
            elif m.group(1) in _KEEP_ARGS and m.group(2):
                b.paragraph(rst_inline(m.group(2)))
            elif m.group(2):
                para.append(m.group(2))
        elif _OPTION.match(stripped) and i > 0 and lines[i - 1].strip().startswith((".. ", ":")):
            pass  # a directive's options
        else:
            para.append(stripped)
        i += 1
    flush()
    return b.document(key)


# ---- Markdown

_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


def md_inline(text: str) -> str:
    text = _MD_LINK.sub(r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"(\*\*|__|`)", "", text)
    return re.sub(r"(?<![\w*])[*_]([^*_\s][^*_]*?)[*_](?![\w*])", r"\1", text)


def read_markdown(text: str, key: str, title: str) -> Document:
    b = _Builder(title)
    lines = text.replace("\r\n", "\n").split("\n")
    para: list[str] = []
    fence: str | None = None

    def flush() -> None:
        if para:
            b.paragraph(md_inline(" ".join(para)))
            para.clear()

    i = 0
    if lines and lines[0].strip() == "---":  # front matter
        end = next((j for j in range(1, len(lines)) if lines[j].strip() == "---"), 0)
        i = end + 1
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
                flush()
            else:
                para.append(stripped)
            i += 1
            continue
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", stripped)
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if m:
            flush()
            b.heading(len(m.group(1)), md_inline(m.group(2)))
        elif stripped and not para and re.match(r"^(=+|-+)$", nxt):
            b.heading(1 if nxt[0] == "=" else 2, md_inline(stripped))
            i += 1
        elif stripped.startswith(("```", "~~~")):
            flush()
            fence = stripped[:3]
        elif not stripped or re.match(r"^([-*_])( ?\1){2,}$", stripped):
            flush()
        else:
            para.append(re.sub(r"^(>\s*|[-*+]\s+|\d+[.)]\s+)", "", stripped))
        i += 1
    flush()
    return b.document(key)


# ---- HTML

_BLOCK = {
    "p", "div", "li", "ul", "ol", "pre", "br", "tr", "td", "th", "table", "section", "article", "main",
    "dd", "dt", "dl", "blockquote", "figcaption", "hr", "body",
}  # fmt: skip
_SKIP = {"script", "style", "nav", "noscript", "header", "footer", "head", "template", "svg", "form", "button"}
_SKIP_CLASSES = {"sphinxsidebar", "related", "footer", "headerlink", "navigation", "toc", "breadcrumbs"}
_VOID = {"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "embed", "source", "track", "wbr"}


class _HTML(HTMLParser):
    def __init__(self, title: str) -> None:
        super().__init__(convert_charrefs=True)
        self.b = _Builder(title)
        self.buf: list[str] = []
        self.stack: list[str] = []
        self.skip_at: int | None = None
        self.heading: int | None = None
        self.title_text: list[str] = []
        self.in_title = False

    def _flush(self) -> None:
        text = "".join(self.buf)
        self.buf.clear()
        if self.heading is not None:
            self.b.heading(self.heading, text.replace("¶", ""))
        else:
            self.b.paragraph(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
        if tag in _VOID:
            if tag in ("br", "hr") and self.skip_at is None:
                self._flush()
            return
        self.stack.append(tag)
        classes = set((dict(attrs).get("class") or "").split())
        if self.skip_at is None and (tag in _SKIP or classes & _SKIP_CLASSES):
            self.skip_at = len(self.stack)
        if self.skip_at is not None:
            return
        if re.fullmatch(r"h[1-6]", tag):
            self._flush()
            self.heading = int(tag[1])
        elif tag in _BLOCK:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        if tag in _VOID or tag not in self.stack:
            return
        while self.stack:
            top = self.stack.pop()
            if self.skip_at is not None and len(self.stack) < self.skip_at:
                self.skip_at = None
                if top == tag:
                    return
                continue
            if self.skip_at is None and (re.fullmatch(r"h[1-6]", top) or top in _BLOCK):
                self._flush()
                if re.fullmatch(r"h[1-6]", top):
                    self.heading = None
            if top == tag:
                return

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title_text.append(data)
        if self.skip_at is None:
            self.buf.append(data)


def read_html(text: str, key: str, title: str) -> Document:
    p = _HTML(title)
    p.feed(text)
    p.close()
    p._flush()
    if p.b.title == title and p.title_text and _spaces("".join(p.title_text)):
        p.b.title = _spaces("".join(p.title_text))
        p.b.sections[0].path = (p.b.title, *p.b.sections[0].path[1:])
    return p.b.document(key)


# ---- PDF


def read_pdf(data: bytes, key: str) -> Document:
    import io

    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                opened = bool(reader.decrypt(""))
            except Exception:  # pypdf needs `cryptography` for AES; either way a password would be needed
                opened = False
            if not opened:
                raise InvalidCorpus(f"{key}: an encrypted PDF that needs a password: decrypt it or remove it")
        meta: Any = reader.metadata or {}
        meta_title = meta.get("/Title")
        pages = [page.extract_text() or "" for page in reader.pages]
    except InvalidCorpus:
        raise
    except Exception as exc:
        raise InvalidCorpus(f"{key}: not a readable PDF ({type(exc).__name__}: {str(exc)[:200]})") from None
    b = _Builder(str(meta_title) if isinstance(meta_title, str) and meta_title.strip() else _stem(key))
    for page in pages:
        for para in re.split(r"\n\s*\n", page):
            # pypdf breaks lines where the page does: join them, and mend words hyphenated at a line's end.
            b.paragraph(re.sub(r"(\w)-\n(\w)", r"\1\2", para))
    return b.document(key)


# ---------------------------------------------------------------- chunking

_SENTENCE = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def sentences(text: str) -> list[str]:
    """Split a paragraph into sentences (on ., ! and ? before a capital or digit; abbreviations aside)."""
    parts = _SENTENCE.split(text)
    out: list[str] = []
    for part in parts:
        if out and re.search(r"\b(e\.g|i\.e|etc|vs|Mr|Dr|cf|No|Fig)\.$", out[-1]):
            out[-1] += " " + part
        else:
            out.append(part)
    return [s.strip() for s in out if s.strip()]


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
