"""The built-in agent: system prompt + session history + the LLM chain, streamed as one text stream.

It is what a SentientAgent without ``agentClass`` runs. The answer is one
``chunked.text`` stream named ``response``; when the LLM manager fails over
mid-answer the stream goes on (same ``stream_id``) and the next chunk carries
metadata saying so (and why: an error class). The closing chunk carries the
finish reason. Which provider and model answered is internal: the metadata
names them only when the agent opts in (``llm.revealProvider``).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from agent_runtime.llm import ChatMessage, ChatRequest, Completed, ProviderSwitch, TextDelta, Usage
from agent_runtime.sdk import AbstractAgent, AgentError, Query, ResponseHandler, Session, Turn
from agent_runtime.sessions import SessionStoreError

log = logging.getLogger("agent_runtime.agents.chat")

RESPONSE_EVENT = "response"
_ROLES = {"system", "user", "assistant"}


def build_messages(system_prompt: str, history: list[Turn], prompt: str) -> list[ChatMessage]:
    """The conversation sent upstream."""
    messages: list[ChatMessage] = []
    if system_prompt:
        messages.append(ChatMessage("system", system_prompt))
    for turn in history:
        if turn.role in _ROLES and turn.content:
            messages.append(ChatMessage(turn.role, turn.content))  # type: ignore[arg-type]
    messages.append(ChatMessage("user", prompt))
    return messages


class ChatAgent(AbstractAgent):
    """Chat over the configured failover chain."""

    async def assist(self, session: Session, query: Query, response_handler: ResponseHandler) -> None:
        """Stream the model's answer to ``query``."""
        context = self.context
        if context is None or context.llm is None:
            raise AgentError("the chat agent has no LLM configured", 503)
        config = context.config
        request = ChatRequest(
            messages=build_messages(config.agent.system_prompt, session.turns(), query.prompt)
        )
        stream = response_handler.create_text_stream(RESPONSE_EVENT)
        reveal = config.llm.reveal_provider
        parts: list[str] = []
        final: dict[str, Any] = {}
        # Closed deterministically when the request stops early (disconnect, cancel): the
        # upstream connection goes at once instead of whenever the generator is collected.
        async with contextlib.aclosing(context.llm.stream(request)) as events:
            async for event in events:
                if type(event) is TextDelta:
                    if event.text:
                        parts.append(event.text)
                        await stream.emit_chunk(event.text)
                elif type(event) is ProviderSwitch:
                    if event.phase == "mid_stream":
                        switch: dict[str, Any] = {"failover": True, "reason": event.reason}
                        if reveal:
                            switch |= {"from_provider": event.from_id, "to_provider": event.to_id}
                        stream.annotate(switch)
                elif type(event) is Usage:
                    response_handler.record_usage(event.input_tokens, event.output_tokens)
                elif type(event) is Completed:
                    final = {"provider": event.provider, "model": event.model} if reveal else {}
                    if event.finish_reason:
                        final["finish_reason"] = event.finish_reason
        if final:
            # Goes on the closing chunk, which complete() sends together with done.
            stream.annotate(final)
        try:
            await session.remember(query.prompt, "".join(parts))
        except SessionStoreError as exc:
            # The answer was delivered; losing it from history is not worth an error event.
            log.warning("could not store the session turn: %s", exc)
        await response_handler.complete()
