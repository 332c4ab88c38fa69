"""What the loopback stand-ins for OpenAI-compatible servers share (llm_standin.py, embeddings_standin.py).

:class:`StandInServer` serves HTTP on a free port of 127.0.0.1 from a daemon thread, a thread per request. It
reads each POST's JSON body and hands it to the subclass's :meth:`StandInServer.handle`, which answers with
:meth:`Exchange.send`; it counts the requests in flight (and the most at once), a request counting as answered
once its reply is ready, before it is written: a client that reads the reply and sends its next request at
once must not find this one still counted. The subclass keeps its own requests, checks and faults.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class Exchange(BaseHTTPRequestHandler):
    """One request to a stand-in; ``standin`` is set on the subclass each server makes of it."""

    standin: StandInServer
    pending = False

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.standin.arrived()
        self.pending = True
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            self.standin.handle(self, body)
        finally:
            self._answered()

    def send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        """Answer with ``body`` (JSON, or bytes as they are) and the extra ``headers``."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self._answered()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout)
            self.wfile.write(data)

    def _answered(self) -> None:
        if self.pending:
            self.pending = False
            self.standin.left()


class StandInServer:
    """The server, its thread and the in-flight counts; subclasses answer in :meth:`handle`."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self.delay = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        handler = type("Handler", (Exchange,), {"standin": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def start(self) -> Self:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, exchange: Exchange, body: dict[str, Any]) -> None:
        """Answer one POST (its path and headers on ``exchange``) with ``exchange.send``."""
        raise NotImplementedError

    def arrived(self) -> None:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def left(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Until no request is in flight (those a client gave up on finish late), at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
