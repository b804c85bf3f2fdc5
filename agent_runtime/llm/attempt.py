"""One attempt on one chain entry: build the upstream request, send it, read the answer.

The manager's single failover loop drives either shape of attempt:
:func:`stream_attempt` yields the pieces of a streamed answer as they arrive,
:func:`complete_attempt` returns a non-streamed answer whole (a coroutine, not
a generator: cheaper on the hot path). Both fill a :class:`StreamState`
(finish reason, token counts) and raise :class:`UpstreamError` on failure.

Timeouts are checked around every read, never across a ``yield``, so the
consumer's own awaits are not cancelled by our timers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import cast

import httpx

from agent_runtime.llm.entries import Entry
from agent_runtime.llm.errors import (
    ConnectionBroken,
    DeadlineExceeded,
    ServerFailed,
    TimedOut,
    UpstreamError,
    classify_exception,
)
from agent_runtime.llm.pool import Upstream
from agent_runtime.llm.providers.base import StreamState, loads_json
from agent_runtime.llm.retry import retry_after_of
from agent_runtime.llm.transport import ResponseStream, close_response
from agent_runtime.llm.types import ChatRequest
from agent_runtime.llm.wire import request_bytes, upstream_request

# Error bodies are read only this far: enough for the error type.
_ERROR_BODY_LIMIT = 16_384


class _Deadline:
    """``asyncio.timeout_at(when)`` around the awaits of one attempt, as a plain ``with`` block.

    The same contract (the task is cancelled at ``when`` and the block raises TimeoutError;
    any other cancellation goes through) for half the cost: asyncio's async context manager
    and its bookkeeping took about 6 us per request in our measurements, the timer alone 2-4.
    """

    __slots__ = ("_cancelling", "_expired", "_handle", "_task")

    def __init__(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        task = asyncio.current_task(loop)
        assert task is not None, "a deadline bounds awaits of a task"
        self._task = task
        self._cancelling = task.cancelling()
        self._expired = False
        self._handle = loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self._handle.cancel()
        if self._expired and self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc


def max_tokens_of(entry: Entry, request: ChatRequest) -> int | None:
    """The request's own limit, else the configured default of the entry's snapshot."""
    if request.max_tokens is not None:
        return request.max_tokens
    return entry.params.max_tokens


def _send(
    entry: Entry,
    upstream: Upstream,
    request: ChatRequest,
    api_key: str | None,
    *,
    stream: bool,
    partial: str | None,
    trace_headers: Mapping[str, str] | None = None,
    whole: bool = False,
) -> Awaitable[httpx.Response | bytes]:
    """The upstream request, built now (errors in it raise here); await the result to send it.

    The awaitable returns once the response head arrived; with ``whole`` (an answer read at
    once), our own transport returns a successful answer's body instead, already read.
    """
    # The parameters of the snapshot this entry belongs to, never a newer one.
    params = entry.params
    body = entry.adapter.body(
        request,
        model=entry.config.model,
        max_tokens=max_tokens_of(entry, request),
        temperature=request.temperature if request.temperature is not None else params.temperature,
        top_p=request.top_p if request.top_p is not None else params.top_p,
        stream=stream,
        partial=partial,
    )
    transport = upstream.transport
    if transport is not None:
        # Our own transport takes the bytes: the entry's head is built once (wire.py).
        try:
            data = request_bytes(entry, body, api_key, stream=stream, extra=trace_headers)
        except httpx.LocalProtocolError as exc:
            raise classify_exception(exc) from None
        if whole:
            return transport.send_whole(entry.address, data, entry.timeout_ext)
        return transport.send_bytes(entry.address, data, entry.timeout_ext)
    return upstream.send(upstream_request(entry, body, api_key, stream=stream, extra=trace_headers))


async def _raise_for_status(entry: Entry, response: httpx.Response) -> None:
    if response.status_code < 300:
        return
    body = b""
    try:
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) >= _ERROR_BODY_LIMIT:
                break
    except httpx.HTTPError:
        pass
    raise entry.adapter.error_for_status(response.status_code, body, retry_after_of(response))


async def _timed(response: httpx.Response, limit: Callable[[], float]) -> AsyncGenerator[bytes, None]:
    """A response's raw chunks, each wait bounded by ``limit()`` (for httpx's own transport)."""
    chunks = response.aiter_raw().__aiter__()
    while True:
        try:
            async with asyncio.timeout_at(limit()):
                chunk = await chunks.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise httpx.ReadTimeout("read timeout") from None
        yield chunk


async def complete_attempt(
    entry: Entry,
    upstream: Upstream,
    request: ChatRequest,
    api_key: str | None,
    state: StreamState,
    remaining: float,
    trace_headers: Mapping[str, str] | None = None,
) -> str:
    """A non-streamed answer's text; ``remaining`` is the time left before the deadline.

    ``trace_headers`` (``traceparent``, ``tracestate``) go on the upstream request when traced.
    """
    if remaining <= 0:
        raise DeadlineExceeded()
    # A non-streamed answer arrives whole: it gets the first-token budget
    # (or the idle one, if longer) to show up, within the deadline.
    limit = min(remaining, max(entry.first_token, entry.idle))
    sending = _send(
        entry, upstream, request, api_key, stream=False, partial=None, trace_headers=trace_headers, whole=True
    )
    loop = asyncio.get_running_loop()
    try:
        with _Deadline(loop, loop.time() + limit):
            answer = await sending
            if type(answer) is bytes:
                # Our transport read a successful answer whole and released its connection.
                raw = answer
            else:
                response = cast(httpx.Response, answer)
                try:
                    await _raise_for_status(entry, response)
                    stream = response.stream
                    raw = (
                        await stream.read() if isinstance(stream, ResponseStream) else await response.aread()
                    )
                finally:
                    await close_response(response)
    except UpstreamError:
        raise
    except (httpx.HTTPError, OSError, TimeoutError) as exc:
        raise classify_exception(exc) from None
    try:
        parsed = entry.adapter.parse_completion(loads_json(raw))
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        raise ServerFailed("invalid response body") from None
    state.done = True
    state.finish_reason = parsed.finish_reason
    state.input_tokens = parsed.input_tokens
    state.output_tokens = parsed.output_tokens
    state.model = parsed.model
    return parsed.text


async def stream_attempt(
    entry: Entry,
    upstream: Upstream,
    request: ChatRequest,
    api_key: str | None,
    state: StreamState,
    remaining: float,
    partial: str | None,
    trace_headers: Mapping[str, str] | None = None,
) -> AsyncGenerator[str, None]:
    """Text pieces of one streamed attempt; closes the response on exit.

    ``partial`` is the answer streamed so far by earlier entries, to be continued.
    """
    loop = asyncio.get_running_loop()
    now = loop.time()
    loop_deadline = now + remaining
    first_by = min(now + entry.first_token, loop_deadline)
    if first_by <= now:
        raise DeadlineExceeded()
    sending = _send(
        entry, upstream, request, api_key, stream=True, partial=partial, trace_headers=trace_headers
    )
    response: httpx.Response | None = None
    got_text = False
    try:
        with _Deadline(loop, first_by):
            # Not ``whole``: always a response, whose body streams.
            response = cast(httpx.Response, await sending)
            await _raise_for_status(entry, response)
        idle = entry.idle

        def limit() -> float:
            # Until the first token, the first-token budget applies; then the idle gap.
            return first_by if not got_text else min(loop.time() + idle, loop_deadline)

        # Raw transfer chunks, split into lines here: fewer layers than aiter_lines()
        # and no str decoding (loads_json takes bytes).
        stream = response.stream
        chunks = stream.chunks(limit) if isinstance(stream, ResponseStream) else _timed(response, limit)
        parse = entry.adapter.parse_data
        buffer = b""
        try:
            async for chunk in chunks:
                buffer += chunk
                if b"\n" not in chunk:
                    continue
                *lines, buffer = buffer.split(b"\n")
                # Text of every event in this read goes out as one piece: when the
                # upstream bursts, the caller writes one SSE event instead of many.
                texts = [
                    t for line in lines if line.startswith(b"data:") and (t := parse(line[5:].strip(), state))
                ]
                if texts:
                    got_text = True
                    yield texts[0] if len(texts) == 1 else "".join(texts)
        except httpx.ReadTimeout:
            if not state.complete:
                raise
            # The answer is complete; only the end of the body is missing.
        finally:
            await chunks.aclose()
    except UpstreamError:
        raise
    except (TimeoutError, httpx.ReadTimeout):
        stage = "idle" if got_text else "first-token"
        raise TimedOut(f"{stage} timeout") from None
    except (httpx.HTTPError, OSError, ValueError) as exc:
        raise classify_exception(exc) from None
    finally:
        if response is not None:
            await close_response(response)
    if not state.complete:
        raise ConnectionBroken("stream ended before the answer was complete")
