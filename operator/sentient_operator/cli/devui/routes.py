"""The dashboard's HTTP side, served by ``sentient dev``'s proxy under ``/_dev/``.

::

    GET /_dev/                       the page (static/index.html)
    GET /_dev/static/NAME            its script and style sheet
    GET /_dev/api/snapshot           requests, reloads, config, metric history (JSON)
    GET /_dev/api/requests           the live view's rows (JSON)
    GET /_dev/api/requests/ID        one request: headers, body, response, events, runtime decisions
    GET /_dev/api/config             the effective config (secret-looking values masked)
    GET /_dev/api/reloads            the reloads of this session
    GET /_dev/api/metrics            one point a second, the last two minutes
    GET /_dev/api/stream             server-sent events: a ``snapshot`` then every change

The page shows prompts and answers: ``sentient dev`` listens on 127.0.0.1 by default, and
the dashboard refuses requests whose ``Host`` is not a loopback name or the address it was
told to listen on (a web page elsewhere cannot reach it through DNS rebinding).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from importlib import resources
from typing import Any

from agent_runtime.routes.dev import live_events, watch_disconnect
from sentient_operator.cli.devui.hub import Hub

PREFIX = "/_dev"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css"}
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
# No framing, no sniffing, nothing loaded from elsewhere.
_SECURITY_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    ),
    (b"cache-control", b"no-store"),
]


def _static(name: str) -> bytes | None:
    """A file of the shipped page, by its plain name only (no paths)."""
    if "/" in name or name.startswith(".") or not name:
        return None
    entry = resources.files("sentient_operator.cli.devui").joinpath("static", name)
    return entry.read_bytes() if entry.is_file() else None


def _host_of(header: str) -> str:
    """The host part of a ``Host`` header (``[::1]:8080`` -> ``::1``)."""
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


class Dashboard:
    """ASGI handler of ``/_dev/...`` over one :class:`Hub`."""

    def __init__(self, hub: Hub, host: str) -> None:
        self.hub = hub
        self.allowed_hosts = _LOOPBACK | ({host} if host not in ("0.0.0.0", "::") else set())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Serve one request under ``/_dev``."""
        path: str = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if _host_of(headers.get("host", "")) not in self.allowed_hosts:
            await _send(
                send, 403, "text/plain; charset=utf-8", b"the dev dashboard answers on its own host only"
            )
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _send(send, 405, "text/plain; charset=utf-8", b"method not allowed", [(b"allow", b"GET")])
            return
        rest = path[len(PREFIX) :]
        if rest == "":
            await _send(send, 308, "text/plain; charset=utf-8", b"", [(b"location", b"/_dev/")])
        elif rest in ("/", "/index.html"):
            await self._file(send, "index.html")
        elif rest.startswith("/static/"):
            await self._file(send, rest.removeprefix("/static/"))
        elif rest == "/api/stream":
            await self._stream(receive, send)
        else:
            body = self._api(rest)
            if body is None:
                await _send(send, 404, "application/json", b'{"error": "not found"}')
            else:
                await _send(send, 200, "application/json", json.dumps(body, default=str).encode())

    def _api(self, rest: str) -> Any:
        hub = self.hub
        if rest == "/api/snapshot":
            return hub.snapshot()
        if rest == "/api/requests":
            return {"requests": [r.summary() for r in hub.requests.values()]}
        if rest.startswith("/api/requests/"):
            record = hub.requests.get(rest.removeprefix("/api/requests/"))
            return None if record is None else record.detail()
        if rest == "/api/config":
            return {"config": hub.config, "notes": hub.notes, "generation": hub.generation}
        if rest == "/api/reloads":
            return {"reloads": list(hub.reloads)}
        if rest == "/api/metrics":
            return {"metrics": list(hub.history)}
        return None

    async def _file(self, send: Any, name: str) -> None:
        data = _static(name)
        if data is None:
            await _send(send, 404, "text/plain; charset=utf-8", b"not found")
            return
        suffix = name[name.rfind(".") :]
        await _send(send, 200, _TYPES.get(suffix, "application/octet-stream"), data)

    async def _stream(self, receive: Any, send: Any) -> None:
        """``snapshot`` first, then every change the hub publishes, until the page or the session goes."""
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), *_SECURITY_HEADERS],
            }
        )
        gone = asyncio.Event()
        watcher = asyncio.ensure_future(watch_disconnect(receive, gone))
        try:
            with self.hub.bus.subscribe() as queue:
                await _event(send, "snapshot", self.hub.snapshot())
                async for item in live_events(queue, gone):
                    if item is None:
                        await send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})
                        continue
                    if item["kind"] == "closing":
                        break
                    await _event(send, str(item["kind"]), item)
            # The session ended, the page left, or it fell behind (it reconnects: a fresh snapshot).
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()


async def _event(send: Any, name: str, data: Any) -> None:
    frame = f"event: {name}\ndata: {json.dumps(data, default=str, separators=(',', ':'))}\n\n"
    await send({"type": "http.response.body", "body": frame.encode(), "more_body": True})


async def _send(
    send: Any, status: int, content_type: str, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        *_SECURITY_HEADERS,
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
