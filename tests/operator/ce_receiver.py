"""A loopback CloudEvents receiver (HTTP binary mode) for tests: records every request, answers a set status."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cloudevents.core.bindings.http import HTTPMessage, from_binary_event


class Receiver:
    def __init__(self) -> None:
        self.status = 200
        self.requests: list[tuple[dict[str, str], bytes, int]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = receiver.status
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/eft"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def accepted(self) -> list[Any]:
        """The CloudEvents answered with a 2xx, parsed back with the SDK."""
        return [from_binary_event(HTTPMessage(headers=h, body=b)) for h, b, s in self.requests if s < 300]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
