"""OpenAI-compatible routes: ``POST /v1/chat/completions`` (streaming and not) and ``GET /v1/models``.

Any OpenAI client can talk to an agent: the agent's system prompt is put
first, the caller's messages follow, and the answer comes from the agent's
failover chain. ``model`` is echoed back (``GET /v1/models`` lists the
agent's name); the chain decides which upstream model answers. Errors use
OpenAI's ``{"error": {...}}`` shape; a failure after streaming started is
sent as one ``data: {"error": ...}`` record before ``data: [DONE]``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from agent_runtime import protocol
from agent_runtime.cache import Directives
from agent_runtime.cache.request import commit_cached
from agent_runtime.guardrails.engine import BLOCKED_CODE, Guardrails, Verdict
from agent_runtime.guardrails.engine import Context as GuardContext
from agent_runtime.guardrails.stream import StreamGuard
from agent_runtime.http import Pulse
from agent_runtime.limits.policy import estimate_text_tokens, reserved_output
from agent_runtime.llm import ChatMessage, ChatRequest, Completed, Completion, LLMError, TextDelta, Usage
from agent_runtime.pipeline import (
    Admit,
    Call,
    Guarded,
    Refusal,
    Route,
    UpstreamFailure,
    count_agent_error,
    run_inline,
    run_work,
    upstream_failure,
)
from agent_runtime.routes.cached import cache_view

log = logging.getLogger("agent_runtime.routes.openai")

_DONE = b"data: [DONE]\n\n"


# Bodies are validated strictly: OpenAI refuses "stream": "yes", so do we.
MAX_TOKENS_LIMIT = 1_000_000


def _whole_number(value: object) -> object:
    # JSON has one number type: 256.0 is the integer 256 (as JSON Schema says); 256.5 and "256" stay refused.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# The bounds inside the type, so that the JSON schema (and the OpenAPI document) carries them too.
TokenCount = Annotated[int, Field(ge=1, le=MAX_TOKENS_LIMIT), BeforeValidator(_whole_number)]
ChoiceCount = Annotated[int, Field(ge=1, le=1), BeforeValidator(_whole_number)]


class ContentPart(BaseModel):
    """One part of a multi-part message; only text parts are used."""

    model_config = ConfigDict(extra="allow", strict=True)
    type: str
    text: str | None = None


class ChatMessageBody(BaseModel):
    """One message of the request."""

    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        """The text content (text parts joined)."""
        if isinstance(self.content, str):
            return self.content
        if not self.content:
            return ""
        return "".join(part.text or "" for part in self.content if part.type == "text")


class StreamOptions(BaseModel):
    """``stream_options``."""

    model_config = ConfigDict(extra="ignore", strict=True)
    include_usage: bool = False


class CacheBody(BaseModel):
    """``cache``: the response-cache extension (LiteLLM's shape); ``Cache-Control`` says the same."""

    model_config = ConfigDict(extra="ignore", strict=True)
    no_cache: bool = Field(default=False, alias="no-cache", description="Do not answer from the cache.")
    no_store: bool = Field(default=False, alias="no-store", description="Do not store this answer.")


class ChatCompletionBody(BaseModel):
    """Body of ``POST /v1/chat/completions``; unknown OpenAI fields are accepted and ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)
    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessageBody] = Field(min_length=1, max_length=10_000)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: TokenCount | None = None
    max_completion_tokens: TokenCount | None = None
    stop: str | list[str] | None = None
    n: ChoiceCount = 1
    user: str | None = Field(default=None, max_length=256)
    cache: CacheBody | None = None


def openai_error(
    message: str, kind: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_exceeded",
    503: "service_unavailable",
    504: "timeout",
}


def _kind(status: int) -> str:
    return _ERROR_TYPES.get(status, "api_error")


def to_chat_request(body: ChatCompletionBody, system_prompt: str) -> ChatRequest:
    """The LLM request: the agent's system prompt first, then the caller's messages."""
    messages: list[ChatMessage] = []
    if system_prompt:
        messages.append(ChatMessage("system", system_prompt))
    for message in body.messages:
        role = message.role
        if role == "developer":
            role = "system"
        elif role == "tool":
            # Tool results travel as user context; the chain does not run tools.
            role = "user"
        messages.append(ChatMessage(role, message.text()))
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    return ChatRequest(
        messages=messages,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=stop,
    )


async def openai_errors(call: Call, refusal: Refusal) -> None:
    """A whole refusal in OpenAI's error shape (``code`` is the stable reason)."""
    r = refusal
    param = r.details.get("check") if r.code == BLOCKED_CODE and r.details else None
    await call.ex.json(r.status, openai_error(r.message, _kind(r.status), r.code, param), r.extra, r.close)


def _retry_headers(headers: Mapping[str, str], failure: UpstreamFailure) -> dict[str, str]:
    extra = dict(headers)
    if failure.retry_after is not None:
        extra["retry-after"] = str(max(1, round(failure.retry_after)))
    return extra


def _upstream_error(failure: UpstreamFailure) -> dict[str, Any]:
    error = openai_error(failure.message, _kind(failure.status), failure.code)
    error["error"]["request_id"] = failure.request_id
    return error


def _output_guardrails(call: Call) -> Guardrails | None:
    guardrails = call.state.guardrails if call.state is not None else None
    return guardrails if guardrails is not None and guardrails.output else None


def _guard_context(call: Call) -> GuardContext:
    principal = call.principal.id if call.principal is not None else None
    return GuardContext(call.ex.route, call.ex.request_id, principal)


def _blocked_error(verdict: Verdict) -> dict[str, Any]:
    """A guardrail block in OpenAI's error shape; ``code`` is stable, ``param`` names the check."""
    message = f"the {'request' if verdict.stage == 'input' else 'answer'} was blocked by a guardrail"
    return openai_error(message, "invalid_request_error", BLOCKED_CODE, verdict.check)


def _caller_offset(call: Call) -> int:
    # The agent's system prompt comes first when it has one; the guardrails check the caller's messages.
    assert call.state is not None
    return 1 if call.state.config.agent.system_prompt else 0


def _read_messages(call: Call) -> list[str]:
    request = call.data
    assert isinstance(request, ChatRequest)
    return [m.content for m in request.messages[_caller_offset(call) :]]


def _write_messages(call: Call, texts: list[str]) -> None:
    request = call.data
    assert isinstance(request, ChatRequest)
    offset = _caller_offset(call)
    for index, text in enumerate(texts, start=offset):
        request.messages[index] = ChatMessage(request.messages[index].role, text)


async def prepare_chat(call: Call) -> Admit:
    """The LLM request; what admission needs (``user`` is the session a budget may count per)."""
    state, body = call.state, call.body
    assert state is not None and isinstance(body, ChatCompletionBody)
    request = to_chat_request(body, state.config.agent.system_prompt)
    call.data = request

    def estimate() -> int:
        max_tokens = request.max_tokens or state.config.llm.parameters.max_tokens
        request.estimated_tokens = estimate_text_tokens([m.content for m in request.messages], max_tokens)
        return request.estimated_tokens

    def output() -> int:
        return reserved_output(request.max_tokens or state.config.llm.parameters.max_tokens)

    return Admit(body.user, estimate, output)


async def run_chat(call: Call) -> int | None:
    """Answer from the chain (or the response cache), streamed or whole; returns the tokens to charge."""
    body = call.body
    assert isinstance(body, ChatCompletionBody)
    if call.state is None or call.state.cache is None:
        return await _stream(call) if body.stream else await _complete(call)
    directives = Directives(body.cache.no_cache, body.cache.no_store) if body.cache is not None else None
    with cache_view(call, directives) as cached:
        tokens = await _stream(call) if body.stream else await _complete(call)
        return cached.charged(tokens) if cached is not None else tokens


def _llm(call: Call) -> Any:
    # The snapshot's view of the chain: behind the response cache when the agent has one.
    state = call.state
    return state.llm if state is not None and state.llm is not None else call.runtime.llm


async def _complete(call: Call) -> int | None:
    ex, body, request = call.ex, call.body, call.data
    assert isinstance(body, ChatCompletionBody) and isinstance(request, ChatRequest)
    work = await run_inline(call, _llm(call).complete(request))
    if work.disconnected:
        return None
    if work.forced or work.cancelled:
        await ex.json(
            503, openai_error("the agent is shutting down", "service_unavailable"), call.headers, close=True
        )
        return None
    if isinstance(work.error, LLMError):
        failure = upstream_failure(call, work.error)
        await ex.json(failure.status, _upstream_error(failure), _retry_headers(call.headers, failure))
        return None
    if work.error is not None:
        log.error("chat completion failed", exc_info=work.error)
        await ex.json(500, openai_error("internal error", "api_error"), call.headers)
        return None
    completion = work.value
    assert completion is not None
    guardrails = _output_guardrails(call)
    if guardrails is not None:
        screening = await guardrails.screen("output", [completion.text], _guard_context(call))
        if screening.blocked is not None:
            await ex.json(400, _blocked_error(screening.blocked), call.headers)
            return completion.input_tokens + completion.output_tokens
        completion = dataclasses.replace(completion, text=screening.texts[0])
    await ex.whole(200, b"application/json", completion_body(body.model, completion), call.headers)
    await commit_cached()
    return completion.input_tokens + completion.output_tokens


def completion_body(model: str, completion: Completion) -> bytes:
    """The ``chat.completion`` object, written as its JSON text directly (once per request:
    only the strings go through the encoder, not a dict of dicts)."""
    dumps = protocol.dumps
    prompt, output = completion.input_tokens, completion.output_tokens
    return (
        f'{{"id":"chatcmpl-{protocol.new_ulid()}","object":"chat.completion","created":{int(time.time())},'
        f'"model":{dumps(model)},"choices":[{{"index":0,"message":{{"role":"assistant",'
        f'"content":{dumps(completion.text)}}},"finish_reason":{dumps(completion.finish_reason or "stop")},'
        f'"logprobs":null}}],"usage":{{"prompt_tokens":{int(prompt)},"completion_tokens":{int(output)},'
        f'"total_tokens":{int(prompt + output)}}},"system_fingerprint":null}}'
    ).encode()


class _ChunkWriter:
    """Encodes ``chat.completion.chunk`` records with the constant part built once."""

    __slots__ = ("_head",)

    def __init__(self, completion_id: str, created: int, model: str) -> None:
        self._head = (
            f'data: {{"id":"{completion_id}","object":"chat.completion.chunk","created":{created},'
            f'"model":{protocol.dumps(model)},"system_fingerprint":null,"choices":'
        )

    def role(self) -> bytes:
        """The opening chunk: the assistant role, empty content."""
        return (
            f'{self._head}[{{"index":0,"delta":{{"role":"assistant","content":""}},'
            f'"logprobs":null,"finish_reason":null}}]}}\n\n'
        ).encode()

    def finish(self, reason: str) -> bytes:
        """The closing chunk: an empty delta and the finish reason."""
        return (
            f'{self._head}[{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":{protocol.dumps(reason)}}}]}}\n\n'
        ).encode()

    def content(self, text: str) -> bytes:
        """A content delta: the per-token record, so only the text is encoded at run time."""
        return (
            f'{self._head}[{{"index":0,"delta":{{"content":{protocol.dumps(text)}}},'
            f'"logprobs":null,"finish_reason":null}}]}}\n\n'
        ).encode()

    def usage(self, prompt: int, completion: int) -> bytes:
        """The last chunk of a stream with ``include_usage``: no choices, the answer's usage."""
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        return f'{self._head}[],"usage":{protocol.dumps(usage)}}}\n\n'.encode()


async def _stream(call: Call) -> int | None:
    ex, body, request, state = call.ex, call.body, call.data, call.state
    assert isinstance(body, ChatCompletionBody) and isinstance(request, ChatRequest) and state is not None
    llm = _llm(call)
    pulse = Pulse(ex, call.headers)
    writer = _ChunkWriter(f"chatcmpl-{protocol.new_ulid()}", int(time.time()), body.model)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    tokens: list[int] = []
    failed: list[UpstreamFailure] = []

    role = writer.role()
    guardrails = _output_guardrails(call)
    guard = StreamGuard(guardrails, _guard_context(call)) if guardrails is not None else None
    blocked: list[Verdict] = []
    # Set once the whole answer went out: only then may the response cache keep it.
    whole: list[bool] = []

    async def pump() -> None:
        finish: str | None = None
        usage: Usage | None = None
        opened = False
        try:
            async with contextlib.aclosing(llm.stream(request)) as events:
                async for event in events:
                    if type(event) is TextDelta:
                        text = event.text
                        if guard is not None and text:
                            text = guard.feed(text)
                            if guard.blocked is not None:
                                blocked.append(guard.blocked)
                                break
                        if text:
                            if not opened:
                                # The role chunk waits for the first token, so a failure before
                                # it can still be an HTTP error status; both go in one write.
                                opened = True
                                await pulse.send(role + writer.content(text))
                            else:
                                await pulse.send(writer.content(text))
                    elif type(event) is Usage:
                        usage = event
                    elif type(event) is Completed:
                        finish = event.finish_reason
        except LLMError as exc:
            count_agent_error(ex.route, exc.status)
            failure = upstream_failure(call, exc)
            if not ex.started:
                failed.append(failure)
                return
            await pulse.send(f"data: {protocol.dumps(_upstream_error(failure))}\n\n".encode())
            await pulse.send(_DONE)
            return
        end: list[bytes] = []
        if guard is not None and not blocked:
            tail = await guard.finish()
            if guard.blocked is not None:
                blocked.append(guard.blocked)
            elif tail:
                end += [writer.content(tail)] if opened else [role, writer.content(tail)]
                opened = True
        if blocked:
            if ex.started:
                # Mid-stream: what was sent stays sent; the stream ends with an error record.
                await pulse.send(f"data: {protocol.dumps(_blocked_error(blocked[0]))}\n\n".encode() + _DONE)
            return
        # The records of the end go in one write.
        end += [writer.finish(finish or "stop")] if opened else [role, writer.finish(finish or "stop")]
        if usage is not None:
            tokens.append(usage.input_tokens + usage.output_tokens)
            if include_usage:
                end.append(writer.usage(usage.input_tokens, usage.output_tokens))
        end.append(_DONE)
        await pulse.send(b"".join(end))
        whole.append(True)

    work = await run_work(call, pump(), pulse, state.heartbeat)
    if work.disconnected:
        return tokens[0] if tokens else None
    task = work.task
    if task.cancelled() or task.exception() is not None:
        if not work.forced:
            log.error(
                "chat completion stream failed", exc_info=None if task.cancelled() else task.exception()
            )
        message = "the agent is shutting down" if work.forced else "internal error"
        error = openai_error(message, "service_unavailable" if work.forced else "api_error")
        if not ex.started:
            await ex.json(503 if work.forced else 500, error, call.headers, close=work.forced)
            return None
        await pulse.send(f"data: {protocol.dumps(error)}\n\n".encode() + _DONE)
    if blocked and not ex.started:
        await ex.json(400, _blocked_error(blocked[0]), call.headers)
        return None
    if failed:
        failure = failed[0]
        await ex.json(failure.status, _upstream_error(failure), _retry_headers(call.headers, failure))
        return None
    await pulse.end()
    if whole:
        await commit_cached()
    return tokens[0] if tokens else None


async def run_models(call: Call) -> None:
    """The one model this endpoint serves: the agent itself."""
    state = call.state
    assert state is not None
    await call.ex.json(
        200,
        {
            "object": "list",
            "data": [
                {
                    "id": state.config.agent.name,
                    "object": "model",
                    "created": 0,
                    "owned_by": state.config.agent.namespace,
                }
            ],
        },
    )


CHAT_COMPLETIONS = Route(
    path="/v1/chat/completions",
    methods=("POST",),
    errors=openai_errors,
    run=run_chat,
    authenticate=True,
    body=ChatCompletionBody,
    prepare=prepare_chat,
    tracked=True,
    guarded=Guarded(_read_messages, _write_messages),
)

MODELS = Route(
    path="/v1/models",
    methods=("GET", "HEAD"),
    errors=openai_errors,
    run=run_models,
    authenticate=True,
)
