"""Plain text (paragraphs cut at blank lines) and JSON lines with a text column (one document a line)."""

from __future__ import annotations

import json

from eft_trainer.errors import InvalidCorpus
from eft_trainer.extract.base import Builder, Document, blocks


def read_plain(text: str, key: str, title: str) -> Document:
    b = Builder(title)
    for para in blocks(text):
        b.paragraph(para)
    return b.document(key)


def read_jsonl(text: str, key: str, column: str, stem: str) -> list[Document]:
    """One document per line: its ``column`` is the text, its ``title`` (when a string) the title."""
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
        title = rec.get("title") if isinstance(rec.get("title"), str) and rec.get("title") else f"{stem} {n}"
        doc = read_plain(rec[column], f"{key}#{n}", str(title))
        if doc.sections:
            docs.append(doc)
    return docs
