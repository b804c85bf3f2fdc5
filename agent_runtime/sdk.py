"""SDK for agents on the runtime, shaped like the Sentient Agent Framework.

A custom agent subclasses :class:`AbstractAgent` and implements ``assist``;
the runtime loads it by ``module:Class`` from the config (``agent.agentClass``),
so users build their own image on ours::

    class Echo(AbstractAgent):
        async def assist(self, session, query, response_handler):
            stream = response_handler.create_text_stream("response")
            await stream.emit_chunk(query.prompt)
            await stream.complete()
            await response_handler.complete()

The runtime completes the response (``done``) when ``assist`` returns without
doing so, and turns an exception into ``error`` then ``done``.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from agent_runtime import protocol

# Turn lives with the session stores (which hold turns); re-exported here for agents.
from agent_runtime.sessions import SessionStore, Turn

if TYPE_CHECKING:
    from agent_runtime.config import RuntimeConfig

__all__ = [
    "AbstractAgent",
    "AgentContext",
    "AgentError",
    "Identity",
    "Query",
    "ResponseClosedError",
    "ResponseHandler",
    "Session",
    "StreamClosedError",
    "TextStream",
    "Turn",
    "turns_from_interactions",
]

# Receives the encoded SSE records of a response, in order.
Sink = Callable[[bytes], Awaitable[None]]


class OutputFilter(Protocol):
    """What the runtime's output guardrails see of a response (see ``docs/guardrails.md``).

    ``text`` gets each piece of a text stream and returns what may be sent now; ``end``
    returns what it withheld once the stream closes; ``block`` checks a whole text block
    and returns it (redacted where asked). Each raises :class:`AgentError` to stop the
    response (the runtime then sends ``error`` and ``done``); an agent that catches it and
    completes still gets the error sent before ``done`` (``blocked_error``).
    """

    def text(self, stream_id: str, content: str) -> str:
        """The part of ``content`` (with what was withheld before) that may be sent now."""

    async def end(self, stream_id: str) -> str:
        """What is still withheld of a stream that closes."""

    async def block(self, content: str) -> str:
        """A whole text block as it may be sent."""

    def blocked_error(self) -> AgentError | None:
        """The error of a block that happened, so that ``done`` never comes without it."""


class ResponseClosedError(RuntimeError):
    """Something was emitted after the response was completed."""


class StreamClosedError(RuntimeError):
    """A chunk was emitted to a text stream after it was completed."""


class AgentError(Exception):
    """An agent failure meant for the caller: its message and code become the ``error`` event.

    Any other exception becomes a generic 500 error whose message does not
    reveal internals.
    """

    def __init__(
        self, message: str, code: int = protocol.DEFAULT_ERROR_CODE, details: Mapping[str, Any] | None = None
    ):
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = dict(details) if details else None


@dataclass(frozen=True, slots=True)
class Identity:
    """Who emits the events: ``id`` is the ``source`` of every event."""

    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Query:
    """The caller's request: a ULID and the prompt."""

    id: str
    prompt: str


@dataclass(slots=True)
class Session:
    """The conversation the query belongs to.

    ``interactions`` are those the caller sent (Sentient Chat keeps history on
    its side); ``history`` is what the runtime's session store holds for
    ``activity_id``. :meth:`turns` gives the best available history.
    """

    processor_id: str
    activity_id: str
    request_id: str
    interactions: list[dict[str, Any]] = field(default_factory=list)
    history: list[Turn] = field(default_factory=list)
    store: SessionStore | None = None

    def get_interactions(self) -> list[dict[str, Any]]:
        """The interactions sent with the request (Sentient Agent Framework name)."""
        return self.interactions

    def turns(self) -> list[Turn]:
        """History from the store, or else from the request's interactions."""
        if self.history:
            return list(self.history)
        return turns_from_interactions(self.interactions)

    async def remember(self, prompt: str, answer: str) -> None:
        """Append one exchange to the session store (no-op without a store)."""
        if self.store is not None:
            await self.store.append(self.activity_id, [Turn("user", prompt), Turn("assistant", answer)])


def turns_from_interactions(interactions: Sequence[Mapping[str, Any]]) -> list[Turn]:
    """Best-effort history from Sentient Chat interactions.

    An interaction is ``{"request": {"event": {"content": {"request_payload":
    {"parts": [{"prompt": ...}]}}}}, "responses": [{"event": {...}}]}``; the
    user turn is the prompts, the assistant turn the text of its responses.
    Shapes that do not match are skipped rather than refused.
    """
    turns: list[Turn] = []
    for interaction in interactions:
        if not isinstance(interaction, Mapping):
            continue
        prompt = _request_prompt(interaction.get("request"))
        if prompt:
            turns.append(Turn("user", prompt))
        answer = "".join(_response_text(r) for r in interaction.get("responses") or [])
        if answer:
            turns.append(Turn("assistant", answer))
    return turns


def _request_prompt(request: Any) -> str:
    if not isinstance(request, Mapping):
        return ""
    event = request.get("event", request)
    content = event.get("content") if isinstance(event, Mapping) else None
    if isinstance(content, str):
        return content
    if not isinstance(content, Mapping):
        return str(event.get("prompt", "")) if isinstance(event, Mapping) else ""
    payload = content.get("request_payload") or {}
    parts = payload.get("parts") if isinstance(payload, Mapping) else None
    if isinstance(parts, list):
        return "\n".join(str(p.get("prompt", "")) for p in parts if isinstance(p, Mapping))
    return str(content.get("prompt", ""))


def _response_text(response: Any) -> str:
    if not isinstance(response, Mapping):
        return ""
    event = response.get("event", response)
    if not isinstance(event, Mapping):
        return ""
    if event.get("content_type") in (protocol.TEXTBLOCK, protocol.TEXT_STREAM):
        content = event.get("content")
        return content if isinstance(content, str) else ""
    return ""


class TextStream:
    """One ``chunked.text`` stream; several may be open and interleaved in one response."""

    __slots__ = ("_complete", "_encoder", "_handler", "_pending_metadata", "event_name", "id")

    def __init__(self, handler: ResponseHandler, event_name: str, stream_id: str) -> None:
        self._handler = handler
        self.event_name = event_name
        self.id = stream_id
        self._encoder = protocol.ChunkEncoder(event_name, handler.source, stream_id)
        self._complete = False
        self._pending_metadata: dict[str, Any] | None = None

    @property
    def is_complete(self) -> bool:
        """True once the closing chunk was sent."""
        return self._complete

    def annotate(self, metadata: Mapping[str, Any]) -> None:
        """Attach metadata to the next chunk sent (e.g. that a provider switch happened)."""
        merged = dict(self._pending_metadata or {})
        merged.update(metadata)
        self._pending_metadata = protocol.validate_metadata(merged)

    async def emit_chunk(self, chunk: str, metadata: Mapping[str, Any] | None = None) -> TextStream:
        """Send one piece of text."""
        if self._complete:
            raise StreamClosedError(f"text stream {self.id} is complete")
        await self._handler._send_chunk(self, chunk, False, self._take_metadata(metadata))
        return self

    async def complete(self, metadata: Mapping[str, Any] | None = None) -> None:
        """Send the closing chunk (empty content, ``is_complete`` true)."""
        if self._complete:
            return
        await self._handler._send_chunk(self, "", True, self._take_metadata(metadata))
        self._complete = True

    def _take_metadata(self, metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
        if metadata is not None:
            self.annotate(metadata)
        pending, self._pending_metadata = self._pending_metadata, None
        return pending


class ResponseHandler:
    """Emits the events of one response, in order, with strictly increasing ids.

    Emitting is serialised by a lock, so streams written by concurrent tasks
    interleave at event granularity and ids stay in wire order.
    """

    def __init__(
        self,
        identity: Identity,
        sink: Sink,
        *,
        lock: asyncio.Lock | None = None,
        output: OutputFilter | None = None,
    ) -> None:
        self.identity = identity
        # The output guardrails; None (the usual case) costs one test per chunk.
        self._output = output
        self._error_sent = False
        self.source = identity.id
        self._sink = sink
        # Shared with the runtime's heartbeat writer, so comments never split a record.
        self._lock = lock or asyncio.Lock()
        self._streams: list[TextStream] = []
        self._complete = False
        self._events = 0
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None

    @property
    def is_complete(self) -> bool:
        """True once ``done`` was sent."""
        return self._complete

    @property
    def events_sent(self) -> int:
        """How many events were emitted (the runtime uses it for heartbeats and errors)."""
        return self._events

    def record_usage(self, input_tokens: int, output_tokens: int) -> None:
        """Report tokens used; the runtime settles the rate limiter with them."""
        self.input_tokens = (self.input_tokens or 0) + input_tokens
        self.output_tokens = (self.output_tokens or 0) + output_tokens

    async def _emit(self, build: Callable[[str], bytes]) -> None:
        if self._complete:
            raise ResponseClosedError("the response is complete")
        async with self._lock:
            await self._sink(build(protocol.new_ulid()))
            self._events += 1

    async def _send_chunk(
        self, stream: TextStream, content: str, is_complete: bool, metadata: dict[str, Any] | None
    ) -> None:
        if self._output is not None:
            content = self._output.text(stream.id, content)
            if is_complete:
                await self._send_tail(stream, await self._output.end(stream.id))
            elif not content:
                if metadata:
                    stream.annotate(metadata)  # kept for the next chunk that carries text
                return
        await self._emit(lambda event_id: stream._encoder.encode(event_id, content, is_complete, metadata))

    async def _send_tail(self, stream: TextStream, tail: str) -> None:
        """What the output guardrails withheld of a closing stream, as a chunk of its own."""
        if tail:
            await self._emit(lambda event_id: stream._encoder.encode(event_id, tail, False, None))

    async def _emit_atomic(
        self, content_type: str, event_name: str, metadata: Mapping[str, Any] | None, **fields: Any
    ) -> None:
        protocol.check_event_name(event_name)
        meta = protocol.validate_metadata(metadata)
        await self._emit(
            lambda event_id: protocol.encode_event(
                content_type, event_name, event_id, self.source, meta, **fields
            )
        )

    async def respond(self, event_name: str, response: str | Mapping[str, Any]) -> None:
        """Send one complete answer (text block or JSON) and complete the response."""
        if isinstance(response, str):
            await self.emit_text_block(event_name, response)
        else:
            await self.emit_json(event_name, response)
        await self.complete()

    async def emit_text_block(
        self, event_name: str, content: str, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Send an ``atomic.textblock`` event."""
        if self._output is not None:
            content = await self._output.block(content)
        await self._emit_atomic(protocol.TEXTBLOCK, event_name, metadata, content=content)

    async def emit_json(
        self, event_name: str, data: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Send an ``atomic.json`` event; ``data`` must be JSON-serialisable."""
        try:
            protocol.dumps(data)
        except (TypeError, ValueError) as exc:
            raise AgentError("response content must be JSON serialisable") from exc
        await self._emit_atomic(protocol.JSON, event_name, metadata, content=dict(data))

    def create_text_stream(self, event_name: str) -> TextStream:
        """Open a new text stream; its chunks share one ``stream_id``."""
        if self._complete:
            raise ResponseClosedError("the response is complete")
        protocol.check_event_name(event_name)
        stream = TextStream(self, event_name, protocol.new_ulid())
        self._streams.append(stream)
        return stream

    async def emit_error(
        self,
        error_message: str,
        error_code: int = protocol.DEFAULT_ERROR_CODE,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Send an ``error`` event (the response stays open until ``complete``)."""
        self._error_sent = True
        await self._emit_atomic(
            protocol.ERROR,
            protocol.ERROR_EVENT_NAME,
            None,
            content=protocol.error_content(error_message, error_code, details),
        )

    async def close_streams(self) -> None:
        """Send the closing chunk of every open stream (the runtime does so before an error)."""
        for stream in self._streams:
            if not stream.is_complete:
                await stream.complete()

    async def complete(self) -> None:
        """Close every open stream, then send ``done``; later calls do nothing.

        The closing chunks and ``done`` leave in one write (one syscall, one
        network packet) since nothing can come between them anyway.
        """
        if self._complete:
            return
        if self._output is not None:
            # What the guardrails withheld goes out before the closing chunks (or raises).
            for stream in self._streams:
                if not stream._complete:
                    await self._send_tail(stream, await self._output.end(stream.id))
            blocked = self._output.blocked_error()
            if blocked is not None and not self._error_sent:
                # The agent caught the block and went on: the caller is told all the same.
                await self.close_streams()
                await self.emit_error(blocked.message, blocked.code, blocked.details)
        self._complete = True
        async with self._lock:
            records = []
            for stream in self._streams:
                if not stream._complete:
                    metadata = stream._take_metadata(None)
                    records.append(stream._encoder.encode(protocol.new_ulid(), "", True, metadata))
                    stream._complete = True
            records.append(
                protocol.encode_event(
                    protocol.DONE, protocol.DONE_EVENT_NAME, protocol.new_ulid(), self.source, None
                )
            )
            await self._sink(b"".join(records))
            self._events += len(records)


@dataclass(slots=True)
class AgentContext:
    """What the runtime gives an agent: its config, the LLM manager, the session store."""

    config: RuntimeConfig
    llm: Any = None
    sessions: SessionStore | None = None


class AbstractAgent(abc.ABC):
    """Base of every agent; implement :meth:`assist`."""

    def __init__(self, name: str, context: AgentContext | None = None) -> None:
        self.name = name
        self.context = context

    @classmethod
    def from_context(cls, context: AgentContext) -> AbstractAgent:
        """How the runtime builds the agent; override to read more of the config."""
        return cls(context.config.agent.name, context)

    @abc.abstractmethod
    async def assist(self, session: Session, query: Query, response_handler: ResponseHandler) -> None:
        """Answer ``query`` through ``response_handler``."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, empty on purpose
        """Release resources when the runtime stops or replaces the agent."""
