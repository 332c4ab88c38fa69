"""Titles, no model: a section's heading (after the document's title) is the query and the section's first
chunk its positive. The heading itself is not in the chunk's text, so the pair is not trivial."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eft_api.spec import Titles
from eft_trainer.documents import Chunk
from eft_trainer.generate import CALLS, Pair


class TitlesGenerator:
    name = "titles"

    def __init__(self, spec: Titles) -> None:
        self.spec = spec
        self.sections = 0

    def query(self, path: tuple[str, ...]) -> str:
        heading = path[-1]
        if self.spec.with_document_title and len(path) > 1:
            return f"{path[0]}: {heading}"
        return heading

    def generate(self, chunks: Sequence[Chunk], n: int) -> list[Pair]:
        out: list[Pair] = []
        seen: set[tuple[str, tuple[str, ...]]] = set()
        for chunk in chunks:
            CALLS[self.name] += 1
            key = (chunk.doc, chunk.path)
            if key in seen:
                continue  # one query per section: its first chunk answers the heading best
            seen.add(key)
            self.sections += 1
            out.append(Pair(self.query(chunk.path), chunk.text, chunk.id, chunk.doc, self.name))
        return out

    def stats(self) -> dict[str, Any]:
        return {"sections": self.sections}
