"""The llm generator: an OpenAI-compatible chat-completions endpoint (vLLM, Ollama, TGI, OpenAI, ...) writes
the questions each chunk answers, through the ``openai`` client.

* Asks for JSON through ``response_format`` (a JSON schema); when the server refuses that parameter (400)
  or answers with something else, the answer is read line by line instead (numbered or bulleted lines).
* Up to ``maxConcurrency`` requests in flight (asyncio); ``maxRequests`` caps the requests in all.
* Retries a chunk on 429 (after the Retry-After the server asks for, else exponential backoff with
  jitter), 5xx, timeouts, connection errors and answers with no question, up to ``maxRetries`` times.
* Stops at once, with :class:`GeneratorMisconfigured`, when the endpoint refuses the key (401/403) or
  does not serve the model (404); stops with :class:`GenerationFailed` as soon as more than
  ``maxFailureRate`` of the chunks can no longer succeed. Every request, retry, failure by kind and the
  tokens in and out (the API's ``usage``) are counted for the data card.

The API key comes from ``EFT_LLM_API_KEY`` (the Job's secretKeyRef), never from the run config; it is
never logged. The prompt is ``EFT_LLM_PROMPT`` (the Job's configMapKeyRef) or :data:`DEFAULT_PROMPT`,
with ``{n}``, ``{path}`` and ``{chunk}`` replaced.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from eft_api.contract import LLM_API_KEY_ENV, LLM_PROMPT_ENV
from eft_api.spec import LLMGenerator as LLMSpec
from eft_trainer.documents import Chunk
from eft_trainer.errors import GenerationFailed, GeneratorMisconfigured
from eft_trainer.generate import CALLS, Pair
from eft_trainer.openai_errors import backoff, classify, error_summary

log = logging.getLogger("eft_trainer.generate.llm")

DEFAULT_PROMPT = """You write search queries for a retrieval system.
Read the passage below and write {n} different questions that the passage answers.
Write the questions in the language of the passage. Each question must make sense on its own, without
the passage, and must not copy a sentence of it.
Answer with JSON only, in this form: {"questions": ["...", "..."]}

Passage (from: {path}):
{chunk}"""

SCHEMA = {
    "name": "questions",
    "strict": True,
    "schema": {
        "type": "object",
        "properties": {"questions": {"type": "array", "items": {"type": "string"}}},
        "required": ["questions"],
        "additionalProperties": False,
    },
}


def prompt_template() -> str:
    return os.environ.get(LLM_PROMPT_ENV) or DEFAULT_PROMPT


def render_prompt(template: str, chunk: Chunk, n: int) -> str:
    return template.replace("{n}", str(n)).replace("{path}", " > ".join(chunk.path)).replace("{chunk}", chunk.text)


def parse_questions(content: str | None) -> tuple[list[str], str]:
    """The questions of an answer and how they were read: ``json``, ``lines`` or ``none``."""
    text = (content or "").strip()
    if not text:
        return [], "none"
    fenced = re.sub(r"^```(?:json)?\s*|\s*```$", "", text)
    try:
        data = json.loads(fenced)
        items = data.get("questions") if isinstance(data, dict) else data
        if isinstance(items, list):
            qs = [q.strip() for q in items if isinstance(q, str) and q.strip()]
            if qs:
                return qs, "json"
    except json.JSONDecodeError:
        pass
    qs = []
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:[-*•]|\d+[.)]|Q\d*[:.])\s*", "", line).strip().strip('"').strip()
        if line and not line.endswith(":") and not line.startswith(("{", "}", "[", "]")) and len(line.split()) >= 3:
            qs.append(line)
    return qs, ("lines" if qs else "none")


class LLMGenerator:
    name = "llm"

    def __init__(self, spec: LLMSpec, seed: int) -> None:
        self.spec = spec
        self.seed = seed
        self.template = prompt_template()
        self.counts: Counter[str] = Counter()
        self.use_schema = True

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(sorted(self.counts.items()))
        out.setdefault("requests", 0)
        out["endpoint"] = self.spec.endpoint
        out["model"] = self.spec.model
        out["responseFormat"] = "json_schema" if self.use_schema else "lines"
        return out

    def generate(self, chunks: Sequence[Chunk], n: int) -> list[Pair]:
        return asyncio.run(self._generate(chunks, n))

    async def _generate(self, chunks: Sequence[Chunk], n: int) -> list[Pair]:
        import openai

        client = openai.AsyncOpenAI(
            base_url=self.spec.endpoint,
            api_key=os.environ.get(LLM_API_KEY_ENV) or "no-key",
            timeout=float(self.spec.timeout_seconds),
            max_retries=0,  # retries are ours: counted, and Retry-After honoured
        )
        sem = asyncio.Semaphore(self.spec.max_concurrency)
        results: list[list[Pair]] = [[] for _ in chunks]
        failed = 0
        bound = self.spec.max_failure_rate * len(chunks)

        async def one(i: int, chunk: Chunk) -> None:
            nonlocal failed
            async with sem:
                CALLS[self.name] += 1
                qs = await self._chunk(client, chunk, n)
            if qs is None:
                failed += 1
                if failed > bound:
                    raise GenerationFailed(self._failure_message(failed, len(chunks)))
                return
            results[i] = [Pair(q, chunk.text, chunk.id, chunk.doc, self.name) for q in qs[:n]]

        tasks = [asyncio.create_task(one(i, c)) for i, c in enumerate(chunks)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.close()
        self.counts["chunksFailed"] = failed
        return [p for r in results for p in r]

    def _failure_message(self, failed: int, total: int) -> str:
        return (
            f"llm generator: {failed} of {total} chunks got no usable answer from {self.spec.endpoint} after "
            f"{self.spec.max_retries} retries each, more than maxFailureRate {self.spec.max_failure_rate} "
            f"({error_summary(self.counts)})"
        )

    async def _chunk(self, client: Any, chunk: Chunk, n: int) -> list[str] | None:
        """The questions of one chunk; [] when maxRequests is spent; None when every attempt failed."""
        prompt = render_prompt(self.template, chunk, n)
        rng = random.Random(f"{self.seed}:{chunk.id}")
        for attempt in range(self.spec.max_retries + 1):
            if self.counts["requests"] >= self.spec.max_requests:
                self.counts["chunksOverMaxRequests"] += 1
                return []  # the cost cap, not a failure: the chunk gets no question
            if attempt:
                self.counts["retries"] += 1
            self.counts["requests"] += 1
            delay = backoff(attempt, rng)
            try:
                kwargs: dict[str, Any] = {
                    "model": self.spec.model,
                    "messages": [{"role": "user", "content": prompt}],
                    "temperature": self.spec.temperature,
                    "seed": self.seed,
                }
                if self.use_schema:
                    kwargs["response_format"] = {"type": "json_schema", "json_schema": SCHEMA}
                resp = await client.chat.completions.create(**kwargs)
            except Exception as exc:
                failure = classify(exc)
                if failure is None:
                    raise
                if failure.kind == "badRequest" and self.use_schema and "response_format" in str(exc):
                    self.use_schema = False  # the server ignores JSON schemas: read lines instead
                    self.counts["responseFormatRefused"] += 1
                    continue
                if failure.kind == "refused":  # the key or the model: no retry can help
                    raise GeneratorMisconfigured(self._refused(exc)) from None
                self.counts[failure.key] += 1
                if failure.kind == "badRequest" and "model" in str(exc).lower():  # a 400 about the model
                    raise GeneratorMisconfigured(self._refused(exc)) from None
                delay = failure.retry_after or delay
            else:
                qs = self._questions(resp)
                if qs:
                    return qs
            await asyncio.sleep(delay)
        return None

    def _questions(self, resp: Any) -> list[str]:
        """The questions of an answer, its tokens and how it was read counted; [] (counted) when it has none."""
        usage = getattr(resp, "usage", None)
        if usage is not None:
            self.counts["tokensIn"] += int(getattr(usage, "prompt_tokens", 0) or 0)
            self.counts["tokensOut"] += int(getattr(usage, "completion_tokens", 0) or 0)
        content = resp.choices[0].message.content if resp.choices else None
        qs, how = parse_questions(content)
        self.counts[f"answers_{how}"] += 1
        if not qs:
            self.counts["errorEmptyAnswer"] += 1
        return qs

    def _refused(self, exc: Any) -> str:
        status = getattr(exc, "status_code", "?")
        what = {
            401: "refused the API key (check spec.data.generate.generator.llm.apiKeySecret)",
            403: "refused the API key (check spec.data.generate.generator.llm.apiKeySecret)",
            404: f"does not serve model {self.spec.model!r} (check spec.data.generate.generator.llm.model and endpoint)",
        }.get(status if isinstance(status, int) else 0, f"refused the request for model {self.spec.model!r}")
        return f"llm generator: {self.spec.endpoint} {what} (HTTP {status})"
