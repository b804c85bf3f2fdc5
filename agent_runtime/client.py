"""Client for an agent's ``/assist`` endpoint, yielding typed Sentient events.

Async::

    async with SentientClient("http://agent:8080", api_key="...") as client:
        async for event in client.assist("hello"):
            ...

and sync (:class:`SyncSentientClient`, same methods). Connection failures
before the response starts are retried with exponential backoff; nothing is
retried once the agent answered (a prompt must not run twice). ``timeout`` is
the longest silence tolerated between bytes (heartbeats count).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from agent_runtime import protocol
from agent_runtime.protocol import AnyEvent, DoneEvent, ErrorEvent, TextBlockEvent, TextChunkEvent

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_RETRYABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError)


class SentientClientError(Exception):
    """The response was not a valid Sentient event stream."""


class SSEParser:
    """Incremental ``text/event-stream`` parser: feed lines, get ``(event, data)`` pairs."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        """Process one line (without its newline); returns a record when one ends."""
        if not line:
            if not self._data:
                self._event = ""
                return None
            record = (self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return record
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None


class LineSplitter:
    """Splits SSE text into lines on CR, LF or CRLF only, as the SSE spec says.

    (httpx's ``iter_lines`` follows ``str.splitlines`` and also splits on
    U+2028, NEL and friends, which may legally appear inside JSON data.)
    """

    def __init__(self) -> None:
        self._buffer = ""

    def feed(self, text: str) -> list[str]:
        """Complete lines in ``text`` (plus what was buffered)."""
        data = self._buffer + text
        # A CR at the end may be the first half of a CRLF split across reads.
        hold_cr = data.endswith("\r")
        if hold_cr:
            data = data[:-1]
        lines = _LINE_BREAK.split(data)
        self._buffer = lines.pop() + ("\r" if hold_cr else "")
        return lines

    def close(self) -> list[str]:
        """The last line, if the text did not end with a line break."""
        rest, self._buffer = self._buffer, ""
        if rest.endswith("\r"):
            rest = rest[:-1]
        return [rest] if rest else []


def parse_stream(lines: Iterable[str]) -> Iterator[AnyEvent]:
    """Typed events from SSE lines."""
    return _parse_lines(SSEParser(), lines)


def _parse_lines(parser: SSEParser, lines: Iterable[str]) -> Iterator[AnyEvent]:
    for line in lines:
        record = parser.feed(line)
        if record is not None:
            yield _to_event(record)


def _to_event(record: tuple[str, str]) -> AnyEvent:
    try:
        data = json.loads(record[1])
    except ValueError as exc:
        raise SentientClientError(f"event {record[0]!r} has invalid JSON data") from exc
    if not isinstance(data, dict):
        raise SentientClientError(f"event {record[0]!r} data is not an object")
    try:
        return protocol.parse_event(data)
    except protocol.ProtocolError as exc:
        raise SentientClientError(str(exc)) from exc


@dataclass
class AssistResult:
    """Everything one ``/assist`` call produced: the HTTP status and the events."""

    status: int
    events: list[AnyEvent] = field(default_factory=list)

    @property
    def text(self) -> str:
        """Text of every text block and stream chunk, in order."""
        return "".join(
            e.content for e in self.events if isinstance(e, TextBlockEvent | TextChunkEvent) and e.content
        )

    def stream_text(self, stream_id: str) -> str:
        """Text of one stream."""
        return "".join(
            e.content for e in self.events if isinstance(e, TextChunkEvent) and e.stream_id == stream_id
        )

    @property
    def error(self) -> ErrorEvent | None:
        """The error event, if the request failed."""
        return next((e for e in self.events if isinstance(e, ErrorEvent)), None)

    @property
    def done(self) -> bool:
        """True when the stream ended with ``done``."""
        return bool(self.events) and isinstance(self.events[-1], DoneEvent)


class _EventDecoder:
    """Decodes the text of one ``/assist`` response, as it arrives, into typed events."""

    def __init__(self) -> None:
        self._lines = LineSplitter()
        self._records = SSEParser()

    def feed(self, text: str) -> Iterator[AnyEvent]:
        """Events completed by ``text``, decoded one by one (an invalid record raises in its turn)."""
        return _parse_lines(self._records, self._lines.feed(text))

    def close(self) -> Iterator[AnyEvent]:
        """Events completed by the end of the response (an unterminated last line or record)."""
        return _parse_lines(self._records, [*self._lines.close(), ""])


def _backoff(attempt: int, base: float) -> float:
    return float(min(base * 2**attempt, 5.0) * (0.5 + random.random() / 2))  # noqa: S311 - jitter


class _ClientBase:
    """What the async and the sync client share: credentials, the request, the retry policy."""

    def __init__(self, *, api_key: str | None, token: str | None, retries: int, backoff: float) -> None:
        self.retries = retries
        self.backoff = backoff
        # HTTP status of the last response (200 even when the agent failed mid-stream).
        self.last_status = 0
        self._api_key = api_key
        self._token = token

    def _request(
        self, prompt: str, query_id: str | None, session: dict[str, Any] | None, request_id: str | None
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """Body and headers of one ``/assist`` call."""
        body: dict[str, Any] = {"query": {"id": query_id or protocol.new_ulid(), "prompt": prompt}}
        if session is not None:
            body["session"] = session
        headers = {"accept": "text/event-stream"}
        if self._token:
            headers["authorization"] = f"Bearer {self._token}"
        elif self._api_key:
            headers["x-api-key"] = self._api_key
        if request_id:
            headers["x-request-id"] = request_id
        return body, headers

    def _retry_delay(self, exc: Exception, answered: bool, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1``, or ``exc`` raised when it must not be retried.

        Retried only while nothing was received: the connection never got to the agent,
        so the prompt cannot have run.
        """
        if answered or attempt >= self.retries:
            raise exc
        return _backoff(attempt, self.backoff)


class SentientClient(_ClientBase):
    """Async client of one agent."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        token: str | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.2,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(api_key=api_key, token=token, retries=retries, backoff=backoff)
        self._http = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=transport,
        )

    async def __aenter__(self) -> SentientClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close connections."""
        await self._http.aclose()

    async def assist(
        self,
        prompt: str,
        *,
        session: dict[str, Any] | None = None,
        query_id: str | None = None,
        request_id: str | None = None,
    ) -> AsyncIterator[AnyEvent]:
        """Stream the events of one query; the last one is always ``done`` (or an exception)."""
        body, headers = self._request(prompt, query_id, session, request_id)
        attempt = 0
        while True:
            answered = False
            try:
                async with self._http.stream("POST", "/assist", json=body, headers=headers) as response:
                    answered = True
                    self.last_status = response.status_code
                    decoder = _EventDecoder()
                    async for text in response.aiter_text():
                        for event in decoder.feed(text):
                            yield event
                    for event in decoder.close():
                        yield event
                    return
            except _RETRYABLE as exc:
                await asyncio.sleep(self._retry_delay(exc, answered, attempt))
                attempt += 1

    async def ask(self, prompt: str, **kwargs: Any) -> AssistResult:
        """The whole response of one query."""
        result = AssistResult(status=0)
        async for event in self.assist(prompt, **kwargs):
            result.events.append(event)
        result.status = self.last_status
        return result


class SyncSentientClient(_ClientBase):
    """Blocking client of one agent (same behaviour as :class:`SentientClient`)."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        token: str | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.2,
    ) -> None:
        super().__init__(api_key=api_key, token=token, retries=retries, backoff=backoff)
        self._http = httpx.Client(base_url=base_url, timeout=httpx.Timeout(timeout, connect=connect_timeout))

    def __enter__(self) -> SyncSentientClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close connections."""
        self._http.close()

    def assist(
        self,
        prompt: str,
        *,
        session: dict[str, Any] | None = None,
        query_id: str | None = None,
        request_id: str | None = None,
    ) -> Iterator[AnyEvent]:
        """Stream the events of one query."""
        body, headers = self._request(prompt, query_id, session, request_id)
        attempt = 0
        while True:
            answered = False
            try:
                with self._http.stream("POST", "/assist", json=body, headers=headers) as response:
                    answered = True
                    self.last_status = response.status_code
                    decoder = _EventDecoder()
                    for text in response.iter_text():
                        yield from decoder.feed(text)
                    yield from decoder.close()
                    return
            except _RETRYABLE as exc:
                time.sleep(self._retry_delay(exc, answered, attempt))
                attempt += 1

    def ask(self, prompt: str, **kwargs: Any) -> AssistResult:
        """The whole response of one query."""
        result = AssistResult(status=0)
        for event in self.assist(prompt, **kwargs):
            result.events.append(event)
        result.status = self.last_status
        return result
