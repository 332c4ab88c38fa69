"""Generators: (query, positive) pairs from chunks of documents, one module each behind one interface.

A generator has a ``name``, ``generate(chunks, n)`` returning :class:`Pair` s (at most ``n`` queries per
chunk), and ``stats()`` (requests, retries, tokens, ... for the data card). :func:`build` chooses them
once from ``spec.data.generate.generator``; the stage (:mod:`eft_trainer.generation`) knows nothing else
of them. :data:`CALLS` counts the chunks each generator was asked about in this process (the dataset
cache's tests use it: a reused dataset makes no call).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from eft_api.spec import GenerateSpec
from eft_trainer.documents import Chunk

#: Chunks each generator was asked about in this process (by generator name).
CALLS: Counter[str] = Counter()


@dataclass(frozen=True)
class Pair:
    query: str
    positive: str
    chunk: str
    doc: str
    generator: str

    def record(self) -> dict[str, str]:
        return {
            "anchor": self.query,
            "positive": self.positive,
            "chunk": self.chunk,
            "doc": self.doc,
            "generator": self.generator,
        }


class Generator(Protocol):
    name: str

    def generate(self, chunks: Sequence[Chunk], n: int) -> list[Pair]: ...

    def stats(self) -> dict[str, Any]: ...


def build(spec: GenerateSpec, locate: Callable[[str], str] | None = None) -> list[Generator]:
    """The generators the spec sets, in a fixed order (inverseCloze, titles, llm, seq2seq); ``locate`` maps
    a model id (seq2seq) to a local folder or hub id."""
    g = spec.generator
    out: list[Generator] = []
    if g.inverse_cloze is not None:
        from eft_trainer.generate.inverse_cloze import InverseClozeGenerator

        out.append(InverseClozeGenerator(g.inverse_cloze, spec.seed))
    if g.titles is not None:
        from eft_trainer.generate.titles import TitlesGenerator

        out.append(TitlesGenerator(g.titles))
    if g.llm is not None:
        from eft_trainer.generate.llm import LLMGenerator

        out.append(LLMGenerator(g.llm, spec.seed))
    if g.seq2seq is not None:
        from eft_trainer.generate.seq2seq import Seq2SeqGenerator

        out.append(Seq2SeqGenerator(g.seq2seq, spec.seed, locate))
    return out
