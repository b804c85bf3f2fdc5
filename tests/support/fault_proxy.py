"""An HTTP reverse proxy in front of a real test server that can be told to misbehave.

Used for faults the real server cannot be made to produce on demand (AWS throttling from
moto) and for "store unreachable" with recovery (the real server keeps its state while the
proxy drops connections). Modes: ``"pass"`` forwards, ``"reset"`` closes every connection
without an answer, ``"respond"`` answers with :attr:`FaultProxy.response`.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}

#: What AWS answers when it throttles a JSON-protocol call.
AWS_THROTTLING = (
    400,
    {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": "ThrottlingException"},
    b'{"__type":"ThrottlingException","message":"Rate exceeded"}',
)


class FaultProxy:
    """``with FaultProxy("http://127.0.0.1:PORT") as proxy: proxy.url``."""

    def __init__(self, upstream: str) -> None:
        parsed = urlparse(upstream)
        self._up_host = parsed.hostname or "127.0.0.1"
        self._up_port = int(parsed.port or 80)
        self.mode = "pass"
        self.response: tuple[int, dict[str, str], bytes] = AWS_THROTTLING
        self.requests = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    def start(self) -> FaultProxy:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                proxy.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if proxy.mode == "reset":
                    self.close_connection = True
                    try:
                        self.connection.shutdown(2)
                    except OSError:
                        pass
                    return
                if proxy.mode == "respond":
                    status, headers, data = proxy.response
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                conn = http.client.HTTPConnection(proxy._up_host, proxy._up_port, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() not in _HOP and k.lower() != "content-length":
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        return Handler
