"""PDF with pypdf: the text of every page, paragraphs cut at blank lines, words hyphenated at a line's end
mended; the title from the document's metadata when it has one."""

from __future__ import annotations

import io
from typing import Any

from eft_trainer.errors import InvalidCorpus
from eft_trainer.extract.base import Builder, Document, blocks


def read_pdf(data: bytes, key: str, title: str) -> Document:
    from pypdf import PdfReader  # a heavy import, needed only for PDFs

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
    b = Builder(str(meta_title) if isinstance(meta_title, str) and meta_title.strip() else title)
    for page in pages:
        for para in blocks(page):
            b.paragraph(_mend(para))
    return b.document(key)


def _mend(para: str) -> str:
    """pypdf breaks lines where the page does: join them, and mend a word hyphenated at a line's end."""
    lines = para.split("\n")
    out = lines[0]
    for line in lines[1:]:
        if len(out) > 1 and out[-1] == "-" and out[-2].isalnum() and line[:1].isalnum():
            out = out[:-1] + line
        else:
            out += "\n" + line
    return out
