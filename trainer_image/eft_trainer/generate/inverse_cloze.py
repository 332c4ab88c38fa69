"""The inverse cloze task (Lee et al., 2019), no model: a sentence of a chunk is the query and the rest of
the chunk its positive. Sentences that do not read as prose (code, signatures, very short or very long
ones) are not chosen; the choice is seeded by the chunk's id, so reruns make the same pairs."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

from eft_api.spec import InverseCloze
from eft_trainer.documents import Chunk, sentences
from eft_trainer.generate import CALLS, Pair

MIN_WORDS, MAX_WORDS = 5, 60


def prose(sentence: str) -> bool:
    """A sentence that could be a question's stand-in: words, mostly letters, not code."""
    words = sentence.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS or sentence.startswith((">>>", "...", "$ ", "#")):
        return False
    letters = sum(ch.isalpha() or ch == " " for ch in sentence)
    return letters / len(sentence) >= 0.75 and not re.search(r"[{}\[\]=<>]{2,}|\)\(", sentence)


class InverseClozeGenerator:
    name = "inverseCloze"

    def __init__(self, spec: InverseCloze, seed: int) -> None:
        self.spec = spec
        self.seed = seed
        self.skipped = 0

    def generate(self, chunks: Sequence[Chunk], n: int) -> list[Pair]:
        out: list[Pair] = []
        for chunk in chunks:
            CALLS[self.name] += 1
            sents = sentences(chunk.text)
            candidates = [i for i, s in enumerate(sents) if prose(s)]
            if len(sents) < 2 or not candidates:
                self.skipped += 1
                continue
            rng = random.Random(f"{self.seed}:{chunk.id}")
            for i in sorted(rng.sample(candidates, min(n, len(candidates)))):
                positive = " ".join(sents[:i] + sents[i + 1 :]) if self.spec.remove_query else chunk.text
                out.append(Pair(sents[i], positive, chunk.id, chunk.doc, self.name))
        return out

    def stats(self) -> dict[str, Any]:
        return {"chunksWithoutProse": self.skipped}
