"""An OpenAI-compatible embeddings endpoint as a baseline (``spec.evaluation.baselines[].endpoint``).

* ``batchSize`` texts per request, up to ``maxConcurrency`` requests in flight (asyncio), through the
  ``openai`` client with its own retries off: ours are counted and honour Retry-After.
* A request is retried on 429 (after the Retry-After the server asks for, else exponential backoff with
  jitter), 5xx, timeouts, connection errors and malformed answers (a wrong count of embeddings, a dimension
  that differs from the others or from ``dimensions``), up to ``maxRetries`` times; then the baseline fails
  with :class:`EndpointFailed`, naming the counts. 401/403/404 fail at once (key refused, model unknown).
* Every request, retry, error by kind and the tokens the API's ``usage`` reports are counted (the cost).

The key comes from ``EFT_BASELINE_<i>_API_KEY`` (the Job's secretKeyRef), never from the run config; it is
never logged.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from eft_api.contract import baseline_key_env
from eft_api.spec import EndpointBaseline
from eft_trainer.openai_errors import backoff, classify, error_summary


class EndpointFailed(Exception):
    """The endpoint could not embed every text (the message names the baseline, the endpoint and the counts)."""


class EndpointEmbedder:
    def __init__(self, spec: EndpointBaseline, name: str, index: int, seed: int = 0) -> None:
        self.spec = spec
        self.name = name
        self.index = index
        self.seed = seed
        self.counts: Counter[str] = Counter()
        self.dimension: int | None = spec.dimensions

    @property
    def where(self) -> str:
        return f"baseline {self.name} (spec.evaluation.baselines[{self.index}].endpoint, {self.spec.url})"

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(sorted(self.counts.items()))
        out.setdefault("requests", 0)
        return out

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text, in order (float32, as the API returns them)."""
        return asyncio.run(self._embed(list(texts)))

    async def _embed(self, texts: list[str]) -> np.ndarray:
        import openai

        client = openai.AsyncOpenAI(
            base_url=self.spec.url,
            api_key=os.environ.get(baseline_key_env(self.index)) or "no-key",
            timeout=float(self.spec.timeout_seconds),
            max_retries=0,  # retries are ours: counted, and Retry-After honoured
        )
        sem = asyncio.Semaphore(self.spec.max_concurrency)
        size = self.spec.batch_size
        batches = [texts[i : i + size] for i in range(0, len(texts), size)]

        async def one(i: int, batch: list[str]) -> list[list[float]]:
            async with sem:
                return await self._batch(client, batch, i)

        tasks = [asyncio.create_task(one(i, b)) for i, b in enumerate(batches)]
        try:
            parts = await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.close()
        rows = [row for part in parts for row in part]
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), -1)

    async def _batch(self, client: Any, batch: list[str], number: int) -> list[list[float]]:
        rng = random.Random(f"{self.seed}:{number}")
        for attempt in range(self.spec.max_retries + 1):
            if attempt:
                self.counts["retries"] += 1
            self.counts["requests"] += 1
            delay = backoff(attempt, rng)
            try:
                kwargs: dict[str, Any] = {"model": self.spec.model, "input": batch, "encoding_format": "float"}
                if self.spec.dimensions:
                    kwargs["dimensions"] = self.spec.dimensions
                resp = await client.embeddings.create(**kwargs)
            except Exception as exc:
                failure = classify(exc)
                if failure is None:
                    raise
                if failure.kind == "refused":  # the key or the model: no retry can help
                    raise EndpointFailed(self._refused(exc)) from None
                self.counts[failure.key] += 1
                delay = failure.retry_after or delay
            else:
                rows = self._rows(resp, len(batch))
                if rows is not None:
                    return rows
            await asyncio.sleep(delay)
        raise EndpointFailed(self._failure_message())

    def _rows(self, resp: Any, expected: int) -> list[list[float]] | None:
        """The embeddings of an answer in input order, or None (counted) when it is malformed."""
        usage = getattr(resp, "usage", None)
        if usage is not None:
            self.counts["tokens"] += int(getattr(usage, "prompt_tokens", 0) or getattr(usage, "total_tokens", 0) or 0)
        data = sorted(resp.data or [], key=lambda d: d.index)
        if len(data) != expected:
            self.counts["errorWrongCount"] += 1
            return None
        rows = [list(d.embedding) for d in data]
        dims = {len(r) for r in rows}
        if len(dims) != 1 or (self.dimension is not None and dims != {self.dimension}):
            self.counts["errorWrongDimension"] += 1
            return None
        self.dimension = dims.pop()
        return rows

    def _failure_message(self) -> str:
        return (
            f"{self.where}: a batch of texts got no usable answer after {self.spec.max_retries} retries "
            f"({self.counts['requests']} requests; {error_summary(self.counts)})"
        )

    def _refused(self, exc: Any) -> str:
        status = getattr(exc, "status_code", "?")
        what = {
            401: "refused the API key (check its apiKeySecret)",
            403: "refused the API key (check its apiKeySecret)",
            404: f"does not serve model {self.spec.model!r} (check its model and url)",
        }.get(status if isinstance(status, int) else 0, f"refused the request for model {self.spec.model!r}")
        return f"{self.where} {what} (HTTP {status})"
