"""Markdown with markdown-it-py (CommonMark): headings make sections; paragraphs, list items, block quotes
and code blocks are paragraphs; inline markup is dropped (a link keeps its text,
an image its alt text, inline HTML nothing); YAML front matter is skipped. Blocks nested more than
:data:`MAX_NESTING` deep raise :class:`~eft_trainer.extract.base.TooDeep` (markdown-it would drop them)."""

from __future__ import annotations

from collections.abc import Sequence

from markdown_it import MarkdownIt
from markdown_it.token import Token

from eft_trainer.extract.base import Builder, Document, TooDeep
from eft_trainer.extract.html import html_text

#: Blocks nested deeper than this (block quotes, lists) are where markdown-it stops: such a file is refused.
MAX_NESTING = 100
#: CommonMark without the table extension: it made 256 KB of "[" four times slower (37 s against 9.6 s on
#: a loaded 2-core machine); a table's words still come through, as a paragraph with its pipes.
_MD = MarkdownIt("commonmark", {"maxNesting": MAX_NESTING})


def read_markdown(text: str, key: str, title: str) -> Document:
    b = Builder(title)
    level: int | None = None
    row: list[str] | None = None
    tokens = _MD.parse(_without_front_matter(text))
    if any(tok.level >= MAX_NESTING - 1 for tok in tokens):
        raise TooDeep(f"{key}: blocks nested deeper than {MAX_NESTING} levels")
    for tok in tokens:
        kind = tok.type
        if kind == "heading_open":
            level = int(tok.tag[1:])
        elif kind == "heading_close":
            level = None
        elif kind == "tr_open":
            row = []
        elif kind == "tr_close" and row is not None:
            b.paragraph(" ".join(row))
            row = None
        elif kind == "inline":
            inline = inline_text(tok.children or [])
            if level is not None:
                b.heading(level, inline)
            elif row is not None:
                row.append(inline)
            else:
                b.paragraph(inline)
        elif kind in ("fence", "code_block"):
            b.paragraph(tok.content)
        elif kind == "html_block":
            b.paragraph(html_text(tok.content))
    return b.document(key)


def inline_text(children: Sequence[Token]) -> str:
    """The words of an inline run: text and code spans; a link's text; an image's alt text; no markup."""
    out: list[str] = []
    for t in children:
        if t.type in ("text", "code_inline"):
            out.append(t.content)
        elif t.type in ("softbreak", "hardbreak"):
            out.append(" ")
        elif t.type == "image":
            out.append(inline_text(t.children or []))
    return "".join(out)


def _without_front_matter(text: str) -> str:
    """``text`` without a leading ``---`` ... ``---`` block (YAML front matter)."""
    first, sep, rest = text.partition("\n")
    if first.strip() != "---" or not sep:
        return text
    pos = 0
    while pos < len(rest):
        end = rest.find("\n", pos)
        end = len(rest) if end < 0 else end
        if rest[pos:end].strip() == "---":
            return rest[end + 1 :]
        pos = end + 1
    return rest
