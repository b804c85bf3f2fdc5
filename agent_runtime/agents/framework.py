"""Agents written for the Sentient Agent Framework run on the runtime unchanged.

The Sentient Agent Framework (``sentient-agent-framework`` on PyPI, 0.3.x) is
the Python reference framework of the Sentient protocol: an agent subclasses
its ``AbstractAgent`` and implements ``assist(session, query,
response_handler)``. Named by ``agentClass`` like any agent, such a class is
wrapped here: the runtime builds it with the agent's name (as the framework's
``DefaultServer`` is given an instance made by ``Agent(name)``) and hands its
``assist`` the framework's own types (``Query`` with a ``ULID`` id, a session
with ``processor_id``, ``activity_id``, ``request_id`` and the request's
interactions parsed as the framework's ``Interaction``) and a response handler
with the framework's interface that writes through the runtime's own handler.
So the events on ``/assist`` are the runtime's (ids strictly increasing,
heartbeats, ``error`` + ``done`` on failures), in the framework's schema.

The framework is imported only when an agent class comes from it; the runtime
never depends on it (it pins fastapi, uvicorn and python-ulid, see
docs/frameworks/sentient-agent-framework.md).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, ClassVar

from agent_runtime.sdk import (
    AbstractAgent,
    AgentContext,
    AgentError,
    Query,
    ResponseClosedError,
    ResponseHandler,
    Session,
    StreamClosedError,
    TextStream,
)

FRAMEWORK = "sentient_agent_framework"


def framework_base(cls: type) -> type | None:
    """The framework's ``AbstractAgent`` when ``cls`` subclasses it, else None."""
    module = sys.modules.get(f"{FRAMEWORK}.interface.agent")
    base = getattr(module, "AbstractAgent", None)
    if isinstance(base, type) and issubclass(cls, base):
        return base
    return None


def adapt(cls: type) -> type[AbstractAgent] | None:
    """A runtime agent class running ``cls`` when it is a framework agent, else None."""
    if framework_base(cls) is None:
        return None
    return type(cls.__name__, (FrameworkAgent,), {"agent_class": cls, "__module__": cls.__module__})


class FrameworkAgent(AbstractAgent):
    """Runs one Sentient Agent Framework agent (``agent_class``) behind the runtime's SDK."""

    agent_class: ClassVar[type]

    def __init__(self, name: str, context: AgentContext | None = None, wrapped: Any = None) -> None:
        super().__init__(name, context)
        self.wrapped = wrapped if wrapped is not None else self._build(name)

    @classmethod
    def _build(cls, name: str) -> Any:
        try:
            return cls.agent_class(name)
        except TypeError as exc:
            raise ValueError(
                f"{cls.agent_class.__module__}:{cls.agent_class.__name__} must be constructible as "
                f"{cls.agent_class.__name__}(name) to run on the runtime: {exc}"
            ) from exc

    async def assist(self, session: Session, query: Query, response_handler: ResponseHandler) -> None:
        """Call the framework agent's ``assist`` with the framework's types."""
        from sentient_agent_framework.interface import exceptions

        framework_query = _query(query)
        try:
            await self.wrapped.assist(
                FrameworkSession(session), framework_query, FrameworkResponseHandler(response_handler)
            )
        except exceptions.AgentError as exc:
            # The framework's error "due to the agent": its message is meant for the caller.
            raise AgentError(str(exc) or "agent error") from exc

    async def aclose(self) -> None:
        """Close the wrapped agent when it has an ``aclose`` of its own."""
        closer = getattr(self.wrapped, "aclose", None)
        if callable(closer):
            await closer()


def _query(query: Query) -> Any:
    from pydantic import ValidationError
    from sentient_agent_framework.interface.request import Query as FrameworkQuery
    from ulid import ULID

    try:
        return FrameworkQuery(id=query.id, prompt=query.prompt)
    except ValidationError:
        # The runtime accepts any short id; the framework's clients send ULIDs.
        return FrameworkQuery(id=ULID(), prompt=query.prompt)


def _ulid(text: str) -> Any:
    from ulid import ULID

    try:
        return ULID.from_str(text)
    except ValueError:
        return ULID()


class FrameworkSession:
    """The framework's ``Session`` interface over the runtime's session."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._activity_id = _ulid(session.activity_id)
        self._request_id = _ulid(session.request_id)

    @property
    def processor_id(self) -> str:
        """The agent's processor id (the ``source`` of its events)."""
        return self.session.processor_id

    @property
    def activity_id(self) -> Any:
        """The conversation's ULID."""
        return self._activity_id

    @property
    def request_id(self) -> Any:
        """The request's ULID."""
        return self._request_id

    def get_interactions(self, **_: Any) -> list[Any]:
        """The request's interactions as the framework's ``Interaction`` models (as DefaultSession gives them)."""
        from pydantic import ValidationError
        from sentient_agent_framework.interface.session import Interaction

        out = []
        for raw in self.session.interactions:
            try:
                out.append(Interaction.model_validate(raw))
            except ValidationError:
                continue
        return out


class FrameworkTextStream:
    """The framework's ``StreamEventEmitter`` over a runtime text stream."""

    def __init__(self, stream: TextStream) -> None:
        self._stream = stream

    @property
    def id(self) -> str:
        """The ``stream_id`` of every chunk."""
        return self._stream.id

    @property
    def is_complete(self) -> bool:
        """True once the closing chunk was sent."""
        return self._stream.is_complete

    async def emit_chunk(self, chunk: str) -> FrameworkTextStream:
        """Send one piece of text."""
        from sentient_agent_framework.interface.exceptions import TextStreamClosedError

        try:
            await self._stream.emit_chunk(chunk)
        except StreamClosedError as exc:
            raise TextStreamClosedError(str(exc)) from exc
        return self

    async def complete(self) -> None:
        """Send the closing chunk."""
        await self._stream.complete()


class FrameworkResponseHandler:
    """The framework's ``ResponseHandler`` interface over the runtime's handler."""

    def __init__(self, handler: ResponseHandler) -> None:
        self._handler = handler

    @property
    def is_complete(self) -> bool:
        """True once ``done`` was sent."""
        return self._handler.is_complete

    async def respond(self, event_name: str, response: Mapping[Any, Any] | str) -> None:
        """One text block or JSON document, then ``done``."""
        await self._call(self._handler.respond, event_name, response)

    async def emit_json(self, event_name: str, data: Mapping[Any, Any]) -> None:
        """An ``atomic.json`` event."""
        await self._call(self._handler.emit_json, event_name, data)

    async def emit_text_block(self, event_name: str, content: str) -> None:
        """An ``atomic.textblock`` event."""
        await self._call(self._handler.emit_text_block, event_name, content)

    def create_text_stream(self, event_name: str) -> FrameworkTextStream:
        """A new ``chunked.text`` stream."""
        from sentient_agent_framework.interface.exceptions import ResponseStreamClosedError

        try:
            return FrameworkTextStream(self._handler.create_text_stream(event_name))
        except ResponseClosedError as exc:
            raise ResponseStreamClosedError(str(exc)) from exc

    async def emit_error(
        self, error_message: str, error_code: int = 500, details: Mapping[str, Any] | None = None
    ) -> None:
        """An ``error`` event (the response stays open until ``complete``)."""
        await self._call(self._handler.emit_error, error_message, error_code, details)

    async def complete(self) -> None:
        """Close every open stream and send ``done``."""
        await self._handler.complete()

    async def _call(self, method: Any, *args: Any) -> None:
        from sentient_agent_framework.interface import exceptions

        try:
            await method(*args)
        except ResponseClosedError as exc:
            raise exceptions.ResponseStreamClosedError(str(exc)) from exc
        except AgentError as exc:
            # Only raised for content that is not JSON: the framework's own exception for it.
            raise exceptions.AgentError(exc.message) from exc
