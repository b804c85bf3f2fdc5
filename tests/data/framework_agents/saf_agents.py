"""Agents written against the Sentient Agent Framework (0.3.0) only: no import of this project."""

from __future__ import annotations

from sentient_agent_framework import AbstractAgent, ResponseHandler, Session
from sentient_agent_framework.interface.exceptions import AgentError
from sentient_agent_framework.interface.request import Query
from ulid import ULID


class EveryEvent(AbstractAgent):
    """Emits every kind of event the framework knows, in a fixed order."""

    async def assist(self, session: Session, query: Query, response_handler: ResponseHandler) -> None:
        if query.prompt == "boom":
            raise RuntimeError("an internal failure the caller must not see")
        if query.prompt == "refuse":
            raise AgentError("this agent refuses")
        assert isinstance(query.id, ULID) and isinstance(session.activity_id, ULID)
        await response_handler.emit_text_block("plan", f"{self.name} got {query.prompt}")
        await response_handler.emit_json(
            "session",
            {
                "processor_id": session.processor_id,
                "activity_id": str(session.activity_id),
                "query_id": str(query.id),
                "interactions": len(list(session.get_interactions())),
            },
        )
        stream = response_handler.create_text_stream("response")
        for word in query.prompt.split():
            await stream.emit_chunk(word + " ")
        await stream.complete()
        await response_handler.emit_error("a recoverable problem", 409, {"hint": "none"})
        await response_handler.complete()


class Responder(AbstractAgent):
    """Answers with respond() (one event, then done)."""

    async def assist(self, session: Session, query: Query, response_handler: ResponseHandler) -> None:
        await response_handler.respond("answer", {"echo": query.prompt})
