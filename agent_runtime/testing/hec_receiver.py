"""A small real HTTP server that speaks Splunk HEC, for the audit sink's tests and benchmarks.

``POST /services/collector/event`` takes concatenated or newline-separated HEC event objects with
``Authorization: Splunk <token>`` and answers as Splunk does (``{"text":"Success","code":0}``;
401 code 3 for a wrong token, 400 code 6/12 for a malformed body). Any other path takes JSON
lines (the ``jsonLines`` format). ``stop()`` and ``start()`` keep the port, so a test can take the
receiver away and bring it back where the sink expects it; ``reject`` answers 400; ``hang`` makes it accept connections
and never answer (a receiver that black-holes requests).
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HEC_PATH = "/services/collector/event"


def parse_hec_body(body: bytes) -> list[dict[str, Any]] | None:
    """The event objects of a HEC body (concatenated JSON objects), or None when malformed."""
    decoder = json.JSONDecoder()
    text = body.decode("utf-8")
    events: list[dict[str, Any]] = []
    position = 0
    while True:
        while position < len(text) and text[position] in " \t\r\n":
            position += 1
        if position >= len(text):
            return events
        try:
            event, position = decoder.raw_decode(text, position)
        except ValueError:
            return None
        if not isinstance(event, dict):
            return None
        events.append(event)


class _Server(ThreadingHTTPServer):
    """Remembers its open connections, so that a stop also ends kept-alive ones."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self.open_connections: set[socket.socket] = set()

    def process_request(self, request: Any, client_address: Any) -> None:
        self.open_connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.open_connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        for connection in list(self.open_connections):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class HECReceiver:
    """Collects what sinks post: ``events`` (HEC objects) and ``records`` (the audit records in order)."""

    def __init__(
        self,
        token: str | None = "hec-test-token",  # noqa: S107 - a test token
        port: int = 0,
        tls: tuple[str, str] | None = None,
    ) -> None:
        """``token``: the one HEC token accepted; None accepts any request (benchmarks).
        ``tls``: (certificate, key) PEM files: the receiver speaks HTTPS."""
        self.token = token
        self.tls = tls
        self.port = port
        self.events: list[dict[str, Any]] = []
        self.lines: list[dict[str, Any]] = []
        self.requests = 0
        self.hang = threading.Event()
        # While set, every POST gets HEC's 400 "Invalid data format" (a batch it will never take).
        self.reject = threading.Event()
        self.released = threading.Event()
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL (no path)."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def records(self) -> list[dict[str, Any]]:
        """The audit records received, in arrival order (HEC events' ``event`` and JSON lines)."""
        with self._lock:
            return [e["event"] for e in self.events] + list(self.lines)

    def start(self) -> HECReceiver:
        """Listen on 127.0.0.1 (the same port after a stop)."""
        receiver = self
        self.released.clear()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _answer(self, status: int, text: str, code: int) -> None:
                body = json.dumps({"text": text, "code": code}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver.hang.is_set():
                    receiver.released.wait()  # until stop(): the client's timeout ends it first
                    return
                with receiver._lock:
                    receiver.requests += 1
                if receiver.reject.is_set():
                    self._answer(400, "Invalid data format", 6)
                    return
                if self.path.split("?")[0] == HEC_PATH:
                    wanted = f"Splunk {receiver.token}"
                    if receiver.token is not None and self.headers.get("Authorization") != wanted:
                        self._answer(401, "Invalid authorization", 3)
                        return
                    events = parse_hec_body(body)
                    if events is None:
                        self._answer(400, "Invalid data format", 6)
                        return
                    if any("event" not in e for e in events):
                        self._answer(400, "Event field is required", 12)
                        return
                    with receiver._lock:
                        receiver.events.extend(events)
                    self._answer(200, "Success", 0)
                    return
                try:
                    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                except ValueError:
                    self._answer(400, "Invalid data format", 6)
                    return
                with receiver._lock:
                    receiver.lines.extend(lines)
                self._answer(200, "Success", 0)

        server = _Server(("127.0.0.1", self.port), Handler)
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="hec-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (the port is kept for :meth:`start`)."""
        server, self._server = self._server, None
        self.released.set()
        if server is not None:
            server.shutdown()
            server.server_close()
            server.drop_connections()
        if self._thread is not None:
            self._thread.join(5)
