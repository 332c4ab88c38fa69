"""A stand-in for an OpenAI-compatible embeddings server (``POST /v1/embeddings``), on loopback.

No embeddings API is reachable here, so this server plays one: it checks every request's shape (path, bearer
key, model, ``input`` a list of strings, ``encoding_format``, ``dimensions``) and answers with a deterministic
embedding (:func:`embed_text`: hashed word and character-trigram counts, normalised; similar texts get
similar vectors, so retrieval over it is meaningful) and a ``usage`` of one token per word.

Faults, server-wide so that tests stay deterministic under concurrency:

* ``faults``: a queue of statuses the next requests answer with (429 carries ``Retry-After: retry_after``;
  500 and 503 an error body), one per request;
* ``wrong_dimension`` / ``wrong_count``: every answer has vectors one too short / one embedding too few;
* ``delay``: seconds each answer takes (a slow server);
* a model other than :data:`MODEL` answers 404 (``model_not_found``), a wrong key 401.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections import deque
from typing import Any

from standin_base import Exchange, StandInServer

MODEL = "embed-stand-in-1"
KEY = "sk-emb-canary-7c1d"
DIM = 64


def embed_text(text: str, dim: int = DIM) -> list[float]:
    """Hashed bag of lower-cased words and character trigrams, L2-normalised. Pure and deterministic."""
    vec = [0.0] * dim
    words = re.findall(r"\w+", text.lower())
    grams = [w[i : i + 3] for w in words for i in range(max(1, len(w) - 2))]
    for feature in [*words, *grams]:
        h = hashlib.blake2b(feature.encode(), digest_size=8).digest()
        vec[int.from_bytes(h[:4], "little") % dim] += 1.0 if h[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


class EmbeddingsStandIn(StandInServer):
    def __init__(self) -> None:
        super().__init__()
        self.faults: deque[int] = deque()
        self.retry_after = 1
        self.wrong_dimension = False
        self.wrong_count = False

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        """Status, headers and JSON body for one request (after the shape checks). Pure but for the fault queue."""
        with self.lock:
            fault = self.faults.popleft() if self.faults else None
        if fault == 429:
            return 429, {"Retry-After": str(self.retry_after)}, _error("rate limited", "rate_limit_exceeded")
        if fault is not None:
            return fault, {}, _error("server error", "server_error")
        if body.get("model") != MODEL:
            return 404, {}, _error(f"The model {body.get('model')!r} does not exist", "model_not_found")
        texts = body["input"]
        dim = int(body.get("dimensions") or DIM)
        vectors = [embed_text(t, dim) for t in texts]
        if self.wrong_dimension:
            vectors = [v[:-1] for v in vectors]
        if self.wrong_count:
            vectors = vectors[:-1]
        tokens = sum(len(t.split()) for t in texts)
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return 200, {}, {"object": "list", "data": data, "model": MODEL, "usage": usage}

    def _check(self, path: str, auth: str | None, body: dict[str, Any]) -> str | None:
        if path != "/v1/embeddings":
            return f"path {path}"
        if auth != f"Bearer {KEY}":
            return "key"
        texts = body.get("input")
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
            return f"input {texts!r}"
        if body.get("encoding_format") not in (None, "float", "base64"):
            return f"encoding_format {body.get('encoding_format')!r}"
        return None

    def handle(self, ex: Exchange, body: dict[str, Any]) -> None:
        with self.lock:
            self.requests.append(body)
        problem = self._check(ex.path, ex.headers.get("Authorization"), body)
        if problem == "key":
            ex.send(401, _error("Incorrect API key provided", "invalid_api_key"))
            return
        if problem:
            self.problems.append(problem)
            ex.send(400, _error(problem, "invalid_request_error"))
            return
        if self.delay:
            time.sleep(self.delay)
        status, headers, reply = self.answer(body)
        ex.send(status, reply, headers)


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}
