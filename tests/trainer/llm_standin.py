"""A stand-in for an OpenAI-compatible chat-completions server, on loopback, for the llm generator's tests.

No LLM weights are reachable here, so this server stands in for vLLM/Ollama/OpenAI: it checks the shape of
every request (path, bearer key, model, messages, temperature, response_format) and answers
deterministically from the chunk in the prompt: ``n`` questions about the chunk's longest words. Markers in
a chunk's text make it misbehave for that chunk, so that tests stay deterministic under concurrency:

* ``RATE_LIMITED``: the first request answers 429 with ``Retry-After: 1``; ``SERVER_ERROR``: the first
  answers 500; ``SLOW_ONCE``: the first sleeps past the client's timeout;
* ``MALFORMED``: the content is not JSON but numbered lines; ``EMPTY``: the content is always empty;
* ``BROKEN_BODY``: the HTTP body itself is not JSON (every time).

Server-wide switches: ``refuse_all`` (every request 503), ``schema_unsupported`` (400 on response_format),
``delay`` (seconds each answer takes).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from typing import Any

from standin_base import Exchange, StandInServer

MODEL = "stand-in-7b"
KEY = "sk-test-canary-3f9a"


def questions_for(chunk: str, n: int) -> list[str]:
    words: list[str] = []
    for w in re.findall(r"[A-Za-z][A-Za-z_]{5,}", chunk):
        if w.lower() not in {x.lower() for x in words} and w.isupper() is False:
            words.append(w)
    words = sorted(words, key=lambda w: (-len(w), w))[: max(n, 1)] or ["this"]
    return [f"What does the documentation say about {w}?" for w in words[:n]]


class StandIn(StandInServer):
    def __init__(self) -> None:
        super().__init__()
        self.seen: Counter[str] = Counter()
        self.refuse_all = False
        self.schema_unsupported = False

    def reset(self) -> None:
        """Forget the last test; first let requests a client gave up on (timeouts) finish, so that they do
        not count as in flight in the next test."""
        self.wait_idle()
        with self.lock:
            self.requests.clear()
            self.problems.clear()
            self.seen.clear()
            self.refuse_all = self.schema_unsupported = False
            self.delay = 0.0
            self.max_in_flight = 0

    def handle(self, ex: Exchange, body: dict[str, Any]) -> None:
        with self.lock:
            self.requests.append({"path": ex.path, "auth": ex.headers.get("Authorization"), **body})
        if ex.headers.get("Authorization") != f"Bearer {KEY}":
            ex.send(401, {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}})
            return
        problems = _shape_problems(ex.path, ex.headers.get("Authorization"), body)
        if problems:
            self.problems += problems
            ex.send(400, {"error": {"message": "; ".join(problems), "type": "invalid_request_error"}})
            return
        if body["model"] != MODEL:
            ex.send(
                404,
                {
                    "error": {
                        "message": f"The model `{body['model']}` does not exist.",
                        "type": "NotFoundError",
                        "code": 404,
                    }
                },
            )
            return
        if self.refuse_all:
            ex.send(503, {"error": {"message": "overloaded"}})
            return
        if self.schema_unsupported and "response_format" in body:
            ex.send(400, {"error": {"message": "response_format is not supported", "param": "response_format"}})
            return
        prompt = body["messages"][-1]["content"]
        chunk = prompt.split("):\n", 1)[-1]
        n = int(re.search(r"write (\d+) different", prompt).group(1)) if "different" in prompt else 1
        with self.lock:
            self.seen[chunk] += 1
            first = self.seen[chunk] == 1
        if self.delay:
            time.sleep(self.delay)
        if first and "RATE_LIMITED" in chunk:
            ex.send(429, {"error": {"message": "slow down"}}, {"Retry-After": "1"})
            return
        if first and "SERVER_ERROR" in chunk:
            ex.send(500, {"error": {"message": "boom"}})
            return
        if first and "SLOW_ONCE" in chunk:
            time.sleep(3)
        if "BROKEN_BODY" in chunk:
            ex.send(200, b"{not json at all")
            return
        qs = questions_for(chunk, n)
        if "EMPTY" in chunk:
            content = ""
        elif "MALFORMED" in chunk or "response_format" not in body:
            content = "Here are the questions:\n" + "\n".join(f"{i + 1}. {q}" for i, q in enumerate(qs))
        else:
            content = json.dumps({"questions": qs})
        ex.send(200, _completion(prompt, content))


def _completion(prompt: str, content: str) -> dict[str, Any]:
    """A chat-completion answer with ``content`` and a ``usage`` of one token per word."""
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": len(prompt.split()),
            "completion_tokens": len(content.split()),
            "total_tokens": len(prompt.split()) + len(content.split()),
        },
    }


def _shape_problems(path: str, auth: str | None, body: dict[str, Any]) -> list[str]:
    out = []
    if path != "/v1/chat/completions":
        out.append(f"path {path}")
    if auth != f"Bearer {KEY}":
        out.append("missing or wrong bearer key")
    msgs = body.get("messages")
    if not (
        isinstance(msgs, list)
        and msgs
        and all(isinstance(m, dict) and m.get("role") and isinstance(m.get("content"), str) for m in msgs)
    ):
        out.append("messages")
    if not isinstance(body.get("model"), str):
        out.append("model")
    if not isinstance(body.get("temperature"), (int, float)):
        out.append("temperature")
    rf = body.get("response_format")
    if rf is not None and not (
        rf.get("type") == "json_schema" and rf.get("json_schema", {}).get("schema", {}).get("type") == "object"
    ):
        out.append("response_format")
    return out
