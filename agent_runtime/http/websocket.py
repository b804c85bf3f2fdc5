"""One WebSocket connection served as an HTTP exchange, so that it goes through the same pipeline.

A ``/ws`` connection is one request: the handshake carries the credentials, the first
message is the body, and the streamed answer goes back one text frame per record. The
pipeline (``agent_runtime.pipeline``) is written against ASGI HTTP messages; this module
translates between the two instead of writing the pipeline a second time:

- ``receive``: the first call (the body read, after authentication passed) accepts the
  handshake and returns the first message as the whole body (it must come within
  ``server.limits.bodyTimeout``); later calls (the connection
  watch) return ``http.disconnect`` when the client goes away;
- ``send``: a response sent before the handshake was accepted (authentication refused, the
  agent draining) becomes the handshake's HTTP refusal; once accepted, every server-sent
  event record becomes one text frame with its ``data`` (comments, i.e. heartbeats, are
  dropped: the WebSocket layer pings), a non-streamed body one frame, and the end of the
  body closes the connection with a code that says how it ended (:func:`close_code`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from agent_runtime.http.exchange import Message, Receive, Scope, Send

log = logging.getLogger("agent_runtime.http.websocket")

# WebSocket close codes (RFC 6455, 7.4.1, and the IANA registry).
NORMAL = 1000
GOING_AWAY = 1001
UNSUPPORTED_DATA = 1003
POLICY_VIOLATION = 1008
TOO_BIG = 1009
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013

_DENIAL = "websocket.http.response"


def close_code(status: int, draining: bool) -> int:
    """The close code of a connection whose answer had HTTP status ``status``."""
    if draining and status in (200, 503):
        return GOING_AWAY
    if status < 400:
        return NORMAL
    if status == 413:
        return TOO_BIG
    if status == 415:
        return UNSUPPORTED_DATA
    if status in (429, 503):
        return TRY_AGAIN_LATER
    if status < 500:
        return POLICY_VIOLATION
    return INTERNAL_ERROR


def http_scope(scope: Scope, method: str = "POST") -> Scope:
    """The HTTP scope the pipeline sees for a WebSocket ``scope``: a JSON ``method`` request."""
    headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"]
    headers.append((b"content-type", b"application/json"))
    return {
        **scope,
        "type": "http",
        "method": method,
        "http_version": scope.get("http_version", "1.1"),
        "headers": headers,
    }


class _SSEFrames:
    """Splits a server-sent event stream into the ``data`` of each record."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[str]:
        self._buffer += data
        *records, self._buffer = self._buffer.split(b"\n\n")
        frames = []
        for record in records:
            lines = [line[5:].removeprefix(b" ") for line in record.split(b"\n") if line.startswith(b"data:")]
            if lines:
                frames.append(b"\n".join(lines).decode())
        return frames


class WebSocketBridge:
    """The ASGI ``receive`` and ``send`` of an HTTP exchange, over one WebSocket connection."""

    def __init__(
        self,
        receive: Receive,
        send: Send,
        subprotocol: str | None,
        draining: Callable[[], bool],
        first_message_timeout: float | None = None,
    ) -> None:
        self._receive = receive
        self._first_message_timeout = first_message_timeout
        self._send = send
        self._subprotocol = subprotocol
        self._draining = draining
        self._accepted = False
        self._closed = False
        self._gone = False
        self._status = 200
        self._sse: _SSEFrames | None = None
        self._whole: list[bytes] = []
        self._denied = False

    async def handshake(self, scope: Scope) -> bool:
        """Wait for the client's ``websocket.connect``; False when it left first."""
        message = await self._receive()
        self._denied = _DENIAL in (scope.get("extensions") or {})
        return bool(message["type"] == "websocket.connect")

    async def receive(self) -> Message:
        """The pipeline's ``receive``: the first message is the body."""
        if self._gone:
            return {"type": "http.disconnect"}
        if not self._accepted:
            await self._accept()
            try:
                async with asyncio.timeout(self._first_message_timeout):
                    message = await self._receive()
            except TimeoutError:
                # Like a slow upload on HTTP (server.limits.bodyTimeout): the connection is not kept.
                self._gone = True
                await self._send({"type": "websocket.close", "code": POLICY_VIOLATION})
                return {"type": "http.disconnect"}
            if message["type"] == "websocket.receive":
                text = message.get("text")
                body = text.encode() if text is not None else bytes(message.get("bytes") or b"")
                return {"type": "http.request", "body": body, "more_body": False}
            self._gone = True
            return {"type": "http.disconnect"}
        # The connection watch: further messages are not part of the protocol and are ignored.
        while True:
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                self._gone = True
                return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        """The pipeline's ``send``: HTTP response messages become a refusal or frames and a close."""
        if self._closed or self._gone:
            return
        kind = message["type"]
        if kind == "http.response.start":
            self._status = int(message["status"])
            if not self._accepted:
                if self._denied:
                    await self._send({**message, "type": "websocket.http.response.start"})
                    return
                # No denial extension: the server answers 403 to a close before accept.
                self._closed = True
                await self._send({"type": "websocket.close", "code": POLICY_VIOLATION})
                return
            content_type = dict(message.get("headers") or []).get(b"content-type", b"")
            self._sse = _SSEFrames() if content_type.startswith(b"text/event-stream") else None
            return
        if kind != "http.response.body":
            return
        data = bytes(message.get("body", b""))
        more = bool(message.get("more_body"))
        if not self._accepted:
            await self._send({"type": "websocket.http.response.body", "body": data, "more_body": more})
            if not more:
                self._closed = True
            return
        try:
            if self._sse is not None:
                for frame in self._sse.feed(data):
                    await self._send({"type": "websocket.send", "text": frame})
            else:
                self._whole.append(data)
            if more:
                return
            if self._whole and any(self._whole):
                await self._send({"type": "websocket.send", "text": b"".join(self._whole).decode()})
            self._closed = True
            await self._send({"type": "websocket.close", "code": close_code(self._status, self._draining())})
        except OSError:
            # The client went away (the server raises ClientDisconnected, an OSError): like an
            # HTTP client that left, the rest of the answer is dropped and the watch ends the work.
            self._gone = True

    async def close(self) -> None:
        """Close an accepted connection the pipeline left open (it failed before answering)."""
        if self._accepted and not self._closed and not self._gone:
            self._closed = True
            await self._send({"type": "websocket.close", "code": INTERNAL_ERROR})

    async def _accept(self) -> None:
        self._accepted = True
        accept: Message = {"type": "websocket.accept"}
        if self._subprotocol is not None:
            accept["subprotocol"] = self._subprotocol
        await self._send(accept)
