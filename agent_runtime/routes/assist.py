"""``POST /assist``: the Sentient agent protocol, answered as server-sent events by the agent.

Failures before the agent runs are whole responses with the matching HTTP
status and an ``error`` + ``done`` body; once it runs, every failure ends the
stream with ``error`` then ``done`` (see ``docs/runtime.md``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent_runtime import protocol
from agent_runtime.cache.request import commit_cached
from agent_runtime.guardrails.engine import Context as GuardContext
from agent_runtime.guardrails.stream import GuardedResponse
from agent_runtime.http import Pulse
from agent_runtime.limits.policy import estimate_tokens
from agent_runtime.llm import LLMError
from agent_runtime.pipeline import (
    Admit,
    Call,
    Guarded,
    Refusal,
    Route,
    Work,
    count_agent_error,
    run_work,
    upstream_failure,
)
from agent_runtime.routes.cached import cache_view
from agent_runtime.sdk import AgentError, Identity, Query, ResponseHandler, Session
from agent_runtime.sessions import OwnedSessions, SessionStoreError

log = logging.getLogger("agent_runtime.routes.assist")


class _Body(BaseModel):
    # Strict: a number is not an id, a string is not a list.
    model_config = ConfigDict(extra="ignore", str_max_length=1 << 20, strict=True)


class QueryBody(_Body):
    """``query`` of an /assist request."""

    id: str = Field(min_length=1, max_length=64)
    prompt: str = Field(max_length=1 << 20)


class SessionBody(_Body):
    """``session`` of an /assist request (Sentient Agent Framework shape)."""

    processor_id: str | None = Field(default=None, max_length=256)
    activity_id: str | None = Field(default=None, max_length=256)
    request_id: str | None = Field(default=None, max_length=256)
    interactions: list[dict[str, Any]] = Field(default_factory=list, max_length=1000)


class AssistBody(_Body):
    """Body of ``POST /assist``."""

    query: QueryBody
    session: SessionBody | None = None


async def sse_errors(call: Call, refusal: Refusal) -> None:
    """A whole /assist refusal: ``error`` (with its details) then ``done``."""
    r = refusal
    await call.ex.sse_error(r.status, call.source, r.message, r.details, r.extra, r.close)


@dataclass(slots=True)
class _Prepared:
    session: Session
    query: Query


async def prepare(call: Call) -> Admit:
    """The session (with the caller's own history) and the query; what admission needs."""
    state, body, principal = call.state, call.body, call.principal
    assert state is not None and isinstance(body, AssistBody) and principal is not None
    session_body = body.session or SessionBody()
    call.source = session_body.processor_id or state.config.agent.name
    activity_id = session_body.activity_id or protocol.new_ulid()
    # The caller's own sessions only: another principal's activity id names a fresh session.
    owned = OwnedSessions(state.sessions, principal.kind, principal.id)
    session = Session(
        processor_id=call.source,
        activity_id=activity_id,
        request_id=session_body.request_id or call.ex.request_id,
        interactions=session_body.interactions,
        # Without a caller-chosen id nobody can continue the conversation: storing it would only cost.
        store=owned if session_body.activity_id else None,
    )
    if session_body.activity_id:
        try:
            session.history = await owned.get(activity_id)
        except SessionStoreError as exc:
            # History is a nicety; answering without it beats failing.
            log.warning("session history unavailable: %s", exc)
    call.data = _Prepared(session, Query(id=body.query.id, prompt=body.query.prompt))

    def estimate() -> int:
        # What the built-in agent will send; custom agents settle with what they report.
        messages = [{"content": state.config.agent.system_prompt}, {"content": body.query.prompt}]
        messages.extend({"content": t.content} for t in session.turns())
        return estimate_tokens(messages, state.config.llm.parameters.max_tokens)

    return Admit(session_body.activity_id, estimate)


async def run(call: Call) -> int | None:
    """Run the agent, streaming its events; the tokens it reports (less cached ones) settle the budget."""
    if call.state is None or call.state.cache is None:
        return await _run(call)
    with cache_view(call) as cached:
        tokens = await _run(call)
        return cached.charged(tokens) if cached is not None else tokens


async def _run(call: Call) -> int | None:
    state, prepared, ex = call.state, call.data, call.ex
    assert state is not None and isinstance(prepared, _Prepared)
    pulse = Pulse(ex, call.headers)
    output = _output_filter(call)
    handler = ResponseHandler(
        Identity(call.source, state.config.agent.name),
        pulse.write,
        lock=pulse.lock,
        output=output,
    )
    work = await run_work(
        call, state.agent.assist(prepared.session, prepared.query, handler), pulse, state.heartbeat
    )
    if not work.disconnected:
        error = _task_error(work)
        try:
            if work.forced:
                if not handler.is_complete:
                    await handler.close_streams()
                    await handler.emit_error("the agent is shutting down", 503)
                    count_agent_error(ex.route, 503)
            elif error is not None:
                code = getattr(error, "status", getattr(error, "code", 500))
                if not ex.started and isinstance(code, int) and 400 <= code <= 599:
                    # Nothing was sent yet: the HTTP status can still tell the failure too.
                    pulse.status = code
                await _report_agent_error(call, handler, error)
                count_agent_error(ex.route, code)
            await handler.complete()
        except Exception:
            log.exception("could not finish the response")
        await pulse.end()
        if error is None and not work.forced and (output is None or output.blocked is None):
            await commit_cached()
    if handler.input_tokens is None:
        return None
    return (handler.input_tokens or 0) + (handler.output_tokens or 0)


def _output_filter(call: Call) -> GuardedResponse | None:
    """The output guardrails of this response, when the agent has output checks."""
    guardrails = call.state.guardrails if call.state is not None else None
    if guardrails is None or not guardrails.output:
        return None
    principal = call.principal.id if call.principal is not None else None
    return GuardedResponse(guardrails, GuardContext(call.ex.route, call.ex.request_id, principal))


def _read_prompt(call: Call) -> list[str]:
    prepared = call.data
    assert isinstance(prepared, _Prepared)
    return [prepared.query.prompt]


def _write_prompt(call: Call, texts: list[str]) -> None:
    prepared = call.data
    assert isinstance(prepared, _Prepared)
    prepared.query = Query(id=prepared.query.id, prompt=texts[0])


def _task_error(work: Work) -> BaseException | None:
    if work.task.cancelled():
        return asyncio.CancelledError()
    error: BaseException | None = work.task.exception()
    return error


async def _report_agent_error(call: Call, handler: ResponseHandler, error: BaseException) -> None:
    if handler.is_complete:
        log.error("agent raised after completing its response: %s", type(error).__name__)
        return
    await handler.close_streams()
    if isinstance(error, LLMError):
        failure = upstream_failure(call, error)
        details: dict[str, Any] = {"code": failure.code, "request_id": failure.request_id}
        if failure.retry_after is not None:
            details["retry_after"] = failure.retry_after
        await handler.emit_error(failure.message, failure.status, details)
    elif isinstance(error, AgentError):
        await handler.emit_error(error.message, error.code, error.details)
    else:
        log.error("agent failed", exc_info=error)
        await handler.emit_error("internal agent error", 500)


ASSIST = Route(
    path="/assist",
    methods=("POST",),
    errors=sse_errors,
    run=run,
    authenticate=True,
    body=AssistBody,
    prepare=prepare,
    tracked=True,
    guarded=Guarded(_read_prompt, _write_prompt),
)
