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
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "stand-in-7b"
KEY = "sk-test-canary-3f9a"


def questions_for(chunk: str, n: int) -> list[str]:
    words: list[str] = []
    for w in re.findall(r"[A-Za-z][A-Za-z_]{5,}", chunk):
        if w.lower() not in {x.lower() for x in words} and w.isupper() is False:
            words.append(w)
    words = sorted(words, key=lambda w: (-len(w), w))[: max(n, 1)] or ["this"]
    return [f"What does the documentation say about {w}?" for w in words[:n]]


class StandIn:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self.seen: Counter[str] = Counter()
        self.refuse_all = False
        self.schema_unsupported = False
        self.delay = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def start(self) -> StandIn:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reset(self) -> None:
        """Forget the last test; first let requests a client gave up on (timeouts) finish, so that they do
        not count as in flight in the next test."""
        deadline = time.monotonic() + 30
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        with self.lock:
            self.requests.clear()
            self.problems.clear()
            self.seen.clear()
            self.refuse_all = self.schema_unsupported = False
            self.delay = 0.0
            self.max_in_flight = 0

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self._answered()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                with standin.lock:
                    standin.in_flight += 1
                    standin.max_in_flight = max(standin.max_in_flight, standin.in_flight)
                self.counted = True
                try:
                    self._post()
                finally:
                    self._answered()

            def _answered(self) -> None:
                """The request is answered once its reply is ready, before it is written: a client that reads
                the reply and sends its next request at once must not find this one still counted."""
                if getattr(self, "counted", False):
                    self.counted = False
                    with standin.lock:
                        standin.in_flight -= 1

            def _post(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with standin.lock:
                    standin.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
                if self.headers.get("Authorization") != f"Bearer {KEY}":
                    self._send(401, {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}})
                    return
                problems = _shape_problems(self.path, self.headers.get("Authorization"), body)
                if problems:
                    standin.problems += problems
                    self._send(400, {"error": {"message": "; ".join(problems), "type": "invalid_request_error"}})
                    return
                if body["model"] != MODEL:
                    self._send(
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
                if standin.refuse_all:
                    self._send(503, {"error": {"message": "overloaded"}})
                    return
                if standin.schema_unsupported and "response_format" in body:
                    self._send(
                        400, {"error": {"message": "response_format is not supported", "param": "response_format"}}
                    )
                    return
                prompt = body["messages"][-1]["content"]
                chunk = prompt.split("):\n", 1)[-1]
                n = int(re.search(r"write (\d+) different", prompt).group(1)) if "different" in prompt else 1
                with standin.lock:
                    standin.seen[chunk] += 1
                    first = standin.seen[chunk] == 1
                if standin.delay:
                    time.sleep(standin.delay)
                if first and "RATE_LIMITED" in chunk:
                    self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": "1"})
                    return
                if first and "SERVER_ERROR" in chunk:
                    self._send(500, {"error": {"message": "boom"}})
                    return
                if first and "SLOW_ONCE" in chunk:
                    time.sleep(3)
                if "BROKEN_BODY" in chunk:
                    self._send(200, b"{not json at all")
                    return
                qs = questions_for(chunk, n)
                if "EMPTY" in chunk:
                    content = ""
                elif "MALFORMED" in chunk or "response_format" not in body:
                    content = "Here are the questions:\n" + "\n".join(f"{i + 1}. {q}" for i, q in enumerate(qs))
                else:
                    content = json.dumps({"questions": qs})
                self._send(
                    200,
                    {
                        "id": "chatcmpl-standin",
                        "object": "chat.completion",
                        "created": 0,
                        "model": MODEL,
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                        ],
                        "usage": {
                            "prompt_tokens": len(prompt.split()),
                            "completion_tokens": len(content.split()),
                            "total_tokens": len(prompt.split()) + len(content.split()),
                        },
                    },
                )

        return Handler


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
