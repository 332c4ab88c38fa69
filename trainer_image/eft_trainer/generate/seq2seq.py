"""The seq2seq generator (GenQ): a local text-to-text model, such as a doc2query T5, writes queries for each
chunk in the pod, on the GPU when there is one. Sampling (top-p) with a fixed seed, ``queriesPerChunk``
sequences a chunk, ``batchSize`` chunks at a time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from eft_api.spec import Seq2SeqGenerator as Seq2SeqSpec
from eft_trainer.documents import Chunk
from eft_trainer.errors import ModelNotFound
from eft_trainer.generate import CALLS, Pair

MAX_INPUT_TOKENS = 512


class Seq2SeqGenerator:
    name = "seq2seq"

    def __init__(self, spec: Seq2SeqSpec, seed: int, locate: Callable[[str], str] | None = None) -> None:
        self.spec = spec
        self.seed = seed
        self.locate = locate or (lambda model: model)
        self.model: Any = None
        self.tokenizer: Any = None
        self.counts = {"batches": 0, "sequences": 0}
        self.device = "cpu"

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        where = self.locate(self.spec.model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(where)
            self.model = AutoModelForSeq2SeqLM.from_pretrained(where)
        except (OSError, ValueError) as exc:
            raise ModelNotFound(
                f"spec.data.generate.generator.seq2seq.model {self.spec.model} could not be loaded: {type(exc).__name__}"
            ) from None
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device).eval()

    def generate(self, chunks: Sequence[Chunk], n: int) -> list[Pair]:
        import torch

        if self.model is None:
            self._load()
        out: list[Pair] = []
        torch.manual_seed(self.seed)
        size = self.spec.batch_size
        for start in range(0, len(chunks), size):
            batch = list(chunks[start : start + size])
            CALLS[self.name] += len(batch)
            enc = self.tokenizer(
                [c.text for c in batch],
                truncation=True,
                max_length=MAX_INPUT_TOKENS,
                padding=True,
                return_tensors="pt",
            ).to(self.device)
            with torch.inference_mode():
                ids = self.model.generate(
                    input_ids=enc["input_ids"],
                    attention_mask=enc["attention_mask"],
                    do_sample=True,
                    top_p=self.spec.top_p,
                    max_new_tokens=self.spec.max_query_tokens,
                    num_return_sequences=n,
                )
            texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
            self.counts["batches"] += 1
            self.counts["sequences"] += len(texts)
            for i, text in enumerate(texts):
                chunk = batch[i // n]
                out.append(Pair(" ".join(text.split()), chunk.text, chunk.id, chunk.doc, self.name))
        return out

    def stats(self) -> dict[str, Any]:
        return {**self.counts, "model": self.spec.model, "device": self.device}
