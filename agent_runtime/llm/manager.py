"""The LLM manager: the agent's failover chain over real upstream HTTP APIs.

For each request the chain is walked in order. Per entry: the circuit
breaker and the provider quota (``ProviderGate``) are asked first, the API
key is read from its file (so a rotated key applies to the very next
attempt), then up to ``retry.maxAttempts`` attempts are made with
exponential backoff and full jitter, honouring ``Retry-After``.

Failover happens on retryable errors (and on provider-scoped 4xx such as a
wrong key). Before the first token it is invisible to the caller except for
a ``ProviderSwitch`` event; after tokens were streamed, the next provider is
asked to *continue* the partial answer, so the caller's stream simply goes on
(``ProviderSwitch(phase="mid_stream")`` lets the agent say so in metadata).

Timeouts: connect (httpx), first token and idle gap between chunks (checked
around every read, never across a ``yield``, so the consumer's own awaits are
not cancelled by our timers), and one overall deadline shared by all attempts
and failovers.

Config reloads swap an immutable snapshot: a request keeps the chain it
started with; httpx clients and breakers of unchanged upstreams are kept.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import ssl
import time
import urllib.request
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from agent_runtime.config import LLMParameters, LLMRuntimeConfig, ProviderConfig, duration_seconds
from agent_runtime.llm.breaker import CircuitBreaker
from agent_runtime.llm.providers import Adapter, adapter_for
from agent_runtime.llm.providers.base import StreamState
from agent_runtime.llm.retry import UpstreamError, backoff_delay, classify_exception, retry_after_of
from agent_runtime.llm.transport import LeanTransport, ResponseStream
from agent_runtime.llm.types import (
    ChatRequest,
    Completed,
    Completion,
    LLMError,
    LLMEvent,
    ProviderSwitch,
    SwitchPhase,
    TextDelta,
    Usage,
)
from agent_runtime.metrics import (
    FAILOVERS,
    PROVIDER_ERRORS,
    RETRIES,
    TIME_TO_FIRST_TOKEN,
    TOKENS,
    UPSTREAM_DURATION,
)

log = logging.getLogger("agent_runtime.llm")

ReadFile = Callable[[str], str | None]

# Connections per upstream. Sized for a busy replica (one connection per
# concurrent upstream call); idle ones are closed after the keep-alive expiry.
MAX_CONNECTIONS = 512
MAX_KEEPALIVE = 256
KEEPALIVE_EXPIRY = 30.0
USER_AGENT = "sentient-agent-runtime"
# Error bodies are read only this far: enough for the error type.
_ERROR_BODY_LIMIT = 16_384


class ProviderGate(Protocol):
    """Provider-side quota (LLMProvider ``limits``), shared by every agent using the provider.

    A refusal is treated like a 429 from that provider: the manager fails over.
    """

    def acquire(self, provider_id: str, tokens: int) -> bool | Awaitable[bool]:
        """Take ``tokens`` (input + expected output) and one request from the provider's budget."""
        ...


@dataclass(slots=True, frozen=True)
class _ClientKey:
    """What makes two chain entries able to share one connection pool."""

    origin: str
    ca_file: str | None
    insecure: bool
    connect: float


@dataclass(slots=True, eq=False)
class _Entry:
    """One chain entry with everything resolved for the hot path."""

    config: ProviderConfig
    adapter: Adapter
    client: httpx.AsyncClient
    client_key: _ClientKey
    breaker: CircuitBreaker
    url: httpx.URL
    lean: LeanTransport | None
    timeout_ext: dict[str, float | None]
    first_token: float
    idle: float
    total: float
    max_attempts: int
    initial_backoff: float
    max_backoff: float
    retry_on: frozenset[str]
    stats: _Stats
    params: LLMParameters
    label: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class _Stats:
    """Last outcomes of one (provider, model), kept across reloads for /health."""

    last_error: str | None = None
    last_error_at: float | None = None
    last_success_at: float | None = None


@dataclass(slots=True, frozen=True, eq=False)
class _Snapshot:
    """An immutable view of the config in force; swapped whole on reload."""

    config: LLMRuntimeConfig
    entries: tuple[_Entry, ...]
    total: float


@dataclass(slots=True, eq=False)
class _Failure:
    entry: _Entry
    error: UpstreamError
    attempts: int


async def _timed(response: httpx.Response, limit: Callable[[], float]) -> AsyncGenerator[bytes, None]:
    """A response's raw chunks, each wait bounded by ``limit()`` (for transports other than ours)."""
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


def _proxied(origin: str) -> bool:
    """Whether the environment routes ``origin`` through a proxy."""
    proxies = urllib.request.getproxies()
    if not proxies:
        return False
    url = httpx.URL(origin)
    if url.scheme not in proxies and "all" not in proxies:
        return False
    return not urllib.request.proxy_bypass(url.host)


def _lean(client: httpx.AsyncClient) -> LeanTransport | None:
    """The client's transport when it is ours (requests then bypass the client's send())."""
    transport = client._transport
    return transport if isinstance(transport, LeanTransport) else None


def _origin(url: str) -> str:
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.host}:{parsed.port or ''}"


def estimate_tokens(request: ChatRequest, max_tokens: int | None) -> int:
    """Rough input + output token count (4 characters a token) for provider quotas."""
    if request.estimated_tokens is not None:
        return request.estimated_tokens
    chars = sum(len(m.content) for m in request.messages)
    return chars // 4 + 1 + (max_tokens or 0)


class LLMManager:
    """Ordered failover chain of LLM providers; see the module docstring."""

    def __init__(
        self,
        config: LLMRuntimeConfig,
        read_file: ReadFile,
        gate: ProviderGate | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read_file = read_file
        self._gate = gate
        self._clock = clock
        self._clients: dict[_ClientKey, httpx.AsyncClient] = {}
        self._client_pem: dict[_ClientKey, str | None] = {}
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._stats: dict[tuple[str, str], _Stats] = {}
        self._retired: list[httpx.AsyncClient] = []
        self._retire_tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._snapshot = self._build(config)

    # ------------------------------------------------------------------ config

    def _tls(self, key: _ClientKey, pem: str | None) -> ssl.SSLContext | bool:
        """Certificate verification for an upstream: public CAs, a private CA bundle, or none."""
        if key.insecure:
            return False
        if not key.ca_file:
            return True
        # A configured CA bundle is the only trust anchor; when it is missing or invalid,
        # nothing verifies (fail closed) rather than falling back to the public CAs.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if pem:
            try:
                context.load_verify_locations(cadata=pem)
            except (ssl.SSLError, ValueError):
                log.warning("CA bundle %s is not valid PEM; TLS to %s will fail", key.ca_file, key.origin)
        else:
            log.warning("CA bundle %s is missing; TLS to %s will fail", key.ca_file, key.origin)
        return context

    def _new_client(self, key: _ClientKey, pem: str | None) -> httpx.AsyncClient:
        verify = self._tls(key, pem)
        timeout = httpx.Timeout(connect=key.connect, read=None, write=key.connect, pool=key.connect)
        if _proxied(key.origin):
            # httpx's own transport knows proxies; ours does not.
            limits = httpx.Limits(
                max_connections=MAX_CONNECTIONS,
                max_keepalive_connections=MAX_KEEPALIVE,
                keepalive_expiry=KEEPALIVE_EXPIRY,
            )
            return httpx.AsyncClient(verify=verify, limits=limits, timeout=timeout, follow_redirects=False)
        transport = LeanTransport(
            verify=verify,
            max_connections=MAX_CONNECTIONS,
            max_keepalive=MAX_KEEPALIVE,
            keepalive_expiry=KEEPALIVE_EXPIRY,
        )
        return httpx.AsyncClient(
            transport=transport, timeout=timeout, follow_redirects=False, trust_env=False
        )

    def _client_for(self, key: _ClientKey) -> httpx.AsyncClient:
        client = self._clients.get(key)
        if client is None:
            pem = self._read_file(key.ca_file) if key.ca_file and not key.insecure else None
            client = self._new_client(key, pem)
            self._clients[key] = client
            self._client_pem[key] = pem
        return client

    def _refresh_tls(self, entry: _Entry) -> None:
        """Follow a rotated CA bundle: a new connection pool when the file's content changed."""
        key = entry.client_key
        assert key.ca_file is not None
        pem = self._read_file(key.ca_file)
        current = self._clients.get(key)
        if current is None or pem != self._client_pem.get(key):
            if current is not None:
                self._retire(self._clients.pop(key), delay=entry.total)
            current = self._new_client(key, pem)
            self._clients[key] = current
            self._client_pem[key] = pem
            log.info("CA bundle of %s changed: new connection pool", key.origin)
        if entry.client is not current:
            entry.client = current
            entry.lean = _lean(current)

    def _build(self, config: LLMRuntimeConfig) -> _Snapshot:
        entries: list[_Entry] = []
        for provider in config.chain:
            adapter = adapter_for(str(provider.type))
            url = adapter.url(provider.endpoint)
            timeouts, retry, cb = provider.timeouts, provider.retry, provider.circuit_breaker
            connect = duration_seconds(timeouts.connect)
            key = _ClientKey(
                origin=_origin(url),
                ca_file=provider.tls.ca_file,
                insecure=provider.tls.insecure_skip_verify,
                connect=connect,
            )
            ident = (provider.id, provider.model)
            breaker = self._breakers.get(ident)
            threshold, window = cb.failure_threshold, duration_seconds(cb.window)
            cooldown, trials = duration_seconds(cb.cooldown), cb.half_open_requests
            if breaker is None:
                breaker = CircuitBreaker(
                    provider.id,
                    provider.model,
                    failure_threshold=threshold,
                    window=window,
                    cooldown=cooldown,
                    half_open_requests=trials,
                    clock=self._clock,
                )
                self._breakers[ident] = breaker
            else:
                breaker.configure(
                    failure_threshold=threshold, window=window, cooldown=cooldown, half_open_requests=trials
                )
            stats = self._stats.setdefault(ident, _Stats())
            client = self._client_for(key)
            entries.append(
                _Entry(
                    config=provider,
                    adapter=adapter,
                    client=client,
                    lean=_lean(client),
                    timeout_ext={"connect": connect, "read": None, "write": connect, "pool": connect},
                    client_key=key,
                    breaker=breaker,
                    url=httpx.URL(url),
                    first_token=duration_seconds(timeouts.first_token),
                    idle=duration_seconds(timeouts.idle),
                    total=duration_seconds(timeouts.total),
                    max_attempts=retry.max_attempts,
                    initial_backoff=duration_seconds(retry.initial_backoff),
                    max_backoff=duration_seconds(retry.max_backoff),
                    retry_on=frozenset(retry.retry_on),
                    stats=stats,
                    params=config.parameters,
                    label={"provider": provider.id, "model": provider.model},
                )
            )
        return _Snapshot(config=config, entries=tuple(entries), total=entries[0].total)

    def reload(self, config: LLMRuntimeConfig) -> None:
        """Swap in a new chain atomically; in-flight requests finish on the one they started with.

        Connection pools of upstreams still in use are kept; the others are
        closed once requests that may still use them had time to finish.
        """
        snapshot = self._build(config)
        old = self._snapshot
        self._snapshot = snapshot
        used = {e.client_key for e in snapshot.entries}
        for key in [k for k in self._clients if k not in used]:
            client = self._clients.pop(key)
            self._client_pem.pop(key, None)
            self._retire(client, delay=old.total)
        log.info(
            "llm chain reloaded",
            extra={"chain": [f"{e.config.id}:{e.config.model}" for e in snapshot.entries]},
        )

    def _retire(self, client: httpx.AsyncClient, delay: float) -> None:
        self._retired.append(client)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # closed by aclose()

        async def close_later() -> None:
            await asyncio.sleep(delay)
            if client in self._retired:
                self._retired.remove(client)
                await client.aclose()

        task = loop.create_task(close_later())
        # Keep a reference so the task is not garbage-collected while sleeping.
        self._retire_tasks.add(task)
        task.add_done_callback(self._retire_tasks.discard)

    async def aclose(self) -> None:
        """Close every connection pool."""
        self._closed = True
        for task in list(self._retire_tasks):
            task.cancel()
        clients = [*self._clients.values(), *self._retired]
        self._clients.clear()
        self._retired.clear()
        for client in clients:
            await client.aclose()

    @property
    def config(self) -> LLMRuntimeConfig:
        """The chain in force."""
        return self._snapshot.config

    # ------------------------------------------------------------------ health

    def _credentials_state(self, entry: _Entry) -> str:
        path = entry.config.credential_file
        if path is None:
            return "none"
        value = self._read_file(path)
        return "present" if value and value.strip() else "missing"

    def usable(self) -> bool:
        """At least one entry has its credentials and a breaker that lets requests through."""
        return any(
            entry.breaker.available() and self._credentials_state(entry) != "missing"
            for entry in self._snapshot.entries
        )

    def snapshot(self) -> list[dict[str, Any]]:
        """Per chain entry state for ``/health`` (no secret values)."""
        now = self._clock()
        result: list[dict[str, Any]] = []
        for entry in self._snapshot.entries:
            stats = entry.stats
            credentials = self._credentials_state(entry)
            result.append(
                {
                    "provider": entry.config.id,
                    "model": entry.config.model,
                    "type": str(entry.config.type),
                    "endpoint": entry.config.endpoint,
                    "breaker": entry.breaker.state,
                    "retry_in": round(entry.breaker.retry_in(), 3),
                    "credentials": credentials,
                    "usable": entry.breaker.available() and credentials != "missing",
                    "last_error": stats.last_error,
                    "last_error_age": None
                    if stats.last_error_at is None
                    else round(now - stats.last_error_at, 3),
                    "last_success_age": (
                        None if stats.last_success_at is None else round(now - stats.last_success_at, 3)
                    ),
                }
            )
        return result

    # ------------------------------------------------------------------ requests

    async def complete(self, request: ChatRequest, *, deadline: float | None = None) -> Completion:
        """One whole answer, from non-streamed upstream calls, with the same retry and failover.

        ``deadline`` as for :meth:`stream`. Raises :class:`LLMError`.
        """
        snap = self._snapshot
        start = self._clock()
        deadline = start + snap.total if deadline is None else deadline
        failures: list[_Failure] = []
        switches: list[ProviderSwitch] = []
        previous: _Failure | None = None
        for entry in snap.entries:
            if previous is not None:
                switch = self._switch(previous, entry, "before_first_token")
                switches.append(switch)
            failure = await self._prepare(entry, request)
            if failure is None:
                attempt = 0
                while True:
                    attempt += 1
                    t0 = self._clock()
                    try:
                        completion = await self._complete_once(entry, request, self._api_key(entry), deadline)
                    except UpstreamError as err:
                        self._on_error(entry, err, t0)
                        failure = await self._retry_or_fail(entry, request, err, attempt, deadline)
                        if failure is not None:
                            break
                        continue
                    except BaseException:
                        entry.breaker.record_neutral()
                        raise
                    self._on_success(entry, t0, completion.input_tokens, completion.output_tokens)
                    completion.switches = switches
                    return completion
            failures.append(failure)
            if not self._fails_over(failure):
                break
            previous = failure
        raise self._final_error(failures, deadline)

    async def stream(
        self, request: ChatRequest, *, deadline: float | None = None
    ) -> AsyncGenerator[LLMEvent, None]:
        """Stream the answer as events; raise :class:`LLMError` when no provider can give it.

        ``deadline`` is an absolute ``time.monotonic()`` value shared by every attempt and
        failover (default: now + the first entry's ``timeouts.total``).

        The consumer should close the iterator when it stops early (``contextlib.aclosing``):
        that closes the upstream HTTP response at once.
        """
        snap = self._snapshot
        start = self._clock()
        deadline = start + snap.total if deadline is None else deadline
        parts: list[str] = []
        failures: list[_Failure] = []
        previous: _Failure | None = None
        phase: SwitchPhase = "before_first_token"
        first_token_seen = False
        for entry in snap.entries:
            if previous is not None:
                yield self._switch(previous, entry, phase)
            failure = await self._prepare(entry, request)
            if failure is None:
                attempt = 0
                while True:
                    attempt += 1
                    partial = "".join(parts) if parts else None
                    state = StreamState()
                    t0 = self._clock()
                    streamed = False
                    try:
                        api_key = self._api_key(entry)
                        async with aclosing(
                            self._stream_once(entry, request, api_key, partial, state, deadline)
                        ) as pieces:
                            async for text in pieces:
                                if not first_token_seen:
                                    first_token_seen = True
                                    TIME_TO_FIRST_TOKEN.labels(**entry.label).observe(self._clock() - start)
                                streamed = True
                                parts.append(text)
                                yield TextDelta(text)
                    except UpstreamError as err:
                        self._on_error(entry, err, t0)
                        if streamed:
                            phase = "mid_stream"
                            failure = _Failure(entry, err, attempt)
                            break
                        failure = await self._retry_or_fail(entry, request, err, attempt, deadline)
                        if failure is not None:
                            break
                        continue
                    except BaseException:
                        # Consumer went away (GeneratorExit) or the task was cancelled:
                        # no verdict on the provider's health.
                        entry.breaker.record_neutral()
                        raise
                    self._on_success(entry, t0, state.input_tokens, state.output_tokens)
                    yield Usage(state.input_tokens, state.output_tokens)
                    yield Completed(entry.config.id, entry.config.model, state.finish_reason)
                    return
            failures.append(failure)
            if not self._fails_over(failure):
                break
            previous = failure
        raise self._final_error(failures, deadline)

    # ------------------------------------------------------------------ one attempt

    async def _prepare(self, entry: _Entry, request: ChatRequest, attempts: int = 0) -> _Failure | None:
        """Breaker and provider quota checks before every attempt on an entry."""
        if not entry.breaker.acquire():
            retry_in = entry.breaker.retry_in()
            err = UpstreamError("circuit-open", "circuit breaker open", retry_after=retry_in or None)
            return _Failure(entry, err, attempts)
        if self._gate is not None:
            tokens = estimate_tokens(request, self._max_tokens(entry, request))
            try:
                allowed = self._gate.acquire(entry.config.id, tokens)
                if inspect.isawaitable(allowed):
                    allowed = await allowed
            except BaseException:
                entry.breaker.record_neutral()
                raise
            if not allowed:
                entry.breaker.record_neutral()
                return _Failure(entry, UpstreamError("rate-limited", "provider quota exhausted"), attempts)
        return None

    def _api_key(self, entry: _Entry) -> str | None:
        """The key for this attempt, read now so that a rotated key applies; None when keyless."""
        path = entry.config.credential_file
        if path is None:
            return None
        value = self._read_file(path)
        if not value or not value.strip():
            raise UpstreamError("credentials", "API key file missing or empty")
        return value.strip()

    @staticmethod
    def _max_tokens(entry: _Entry, request: ChatRequest) -> int | None:
        """The request's own limit, else the configured default of the entry's snapshot."""
        if request.max_tokens is not None:
            return request.max_tokens
        return entry.params.max_tokens

    def _body(self, entry: _Entry, request: ChatRequest, *, stream: bool, partial: str | None) -> bytes:
        # The parameters of the snapshot this entry belongs to, never a newer one.
        params = entry.params
        body = entry.adapter.body(
            request,
            model=entry.config.model,
            max_tokens=self._max_tokens(entry, request),
            temperature=request.temperature if request.temperature is not None else params.temperature,
            top_p=request.top_p if request.top_p is not None else params.top_p,
            stream=stream,
            partial=partial,
        )
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()

    @staticmethod
    def _request(entry: _Entry, *, content: bytes, headers: dict[str, str]) -> httpx.Request:
        return httpx.Request(
            "POST",
            entry.url,
            content=content,
            headers={"user-agent": USER_AGENT, **headers},
            extensions={"timeout": entry.timeout_ext},
        )

    async def _send(self, entry: _Entry, request: httpx.Request) -> httpx.Response:
        """Send through the lean transport directly (the client's send() adds auth and cookie
        handling, redirects and an INFO log line per call: ~180 us we do not need), or through
        the client when it routes via a proxy."""
        if entry.client_key.ca_file and not entry.client_key.insecure:
            self._refresh_tls(entry)
        if entry.lean is None:
            return await entry.client.send(request, stream=True)
        response = await entry.lean.handle_async_request(request)
        response.request = request
        return response

    async def _raise_for_status(self, entry: _Entry, response: httpx.Response) -> None:
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

    async def _complete_once(
        self, entry: _Entry, request: ChatRequest, api_key: str | None, deadline: float
    ) -> Completion:
        now = self._clock()
        remaining = deadline - now
        if remaining <= 0:
            raise UpstreamError("timeout", "deadline exceeded")
        # A non-streamed answer arrives whole: it gets the first-token budget
        # (or the idle one, if longer) to show up, within the deadline.
        limit = min(remaining, max(entry.first_token, entry.idle))
        request_ = self._request(
            entry,
            content=self._body(entry, request, stream=False, partial=None),
            headers=entry.adapter.headers(api_key, entry.config.default_headers, stream=False),
        )
        try:
            async with asyncio.timeout(limit):
                response = await self._send(entry, request_)
                try:
                    await self._raise_for_status(entry, response)
                    raw = await response.aread()
                finally:
                    await response.aclose()
        except UpstreamError:
            raise
        except (httpx.HTTPError, OSError, TimeoutError) as exc:
            raise classify_exception(exc) from None
        try:
            parsed = entry.adapter.parse_completion(json.loads(raw))
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            raise UpstreamError("5xx", "invalid response body") from None
        return Completion(
            text=parsed.text,
            provider=entry.config.id,
            model=entry.config.model,
            finish_reason=parsed.finish_reason,
            input_tokens=parsed.input_tokens,
            output_tokens=parsed.output_tokens,
        )

    async def _stream_once(
        self,
        entry: _Entry,
        request: ChatRequest,
        api_key: str | None,
        partial: str | None,
        state: StreamState,
        deadline: float,
    ) -> AsyncGenerator[str, None]:
        """Text pieces of one streamed attempt; raises UpstreamError, closes the response on exit."""
        loop = asyncio.get_running_loop()
        # Timers run on the loop clock; the deadline is expressed on self._clock.
        offset = loop.time() - self._clock()
        loop_deadline = deadline + offset
        first_by = min(loop.time() + entry.first_token, loop_deadline)
        if first_by <= loop.time():
            raise UpstreamError("timeout", "deadline exceeded")
        request_ = self._request(
            entry,
            content=self._body(entry, request, stream=True, partial=partial),
            headers=entry.adapter.headers(api_key, entry.config.default_headers, stream=True),
        )
        response: httpx.Response | None = None
        got_text = False
        try:
            async with asyncio.timeout_at(first_by):
                response = await self._send(entry, request_)
                await self._raise_for_status(entry, response)
            idle = entry.idle

            def limit() -> float:
                # Until the first token, the first-token budget applies; then the idle gap.
                return first_by if not got_text else min(loop.time() + idle, loop_deadline)

            # Raw transfer chunks, split into lines here: fewer layers than aiter_lines()
            # and no str decoding (json.loads takes bytes).
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
                        t
                        for line in lines
                        if line.startswith(b"data:") and (t := parse(line[5:].strip(), state))
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
            raise UpstreamError("timeout", f"{stage} timeout") from None
        except (httpx.HTTPError, OSError, ValueError) as exc:
            raise classify_exception(exc) from None
        finally:
            if response is not None:
                await response.aclose()
        if not state.complete:
            raise UpstreamError("reset", "stream ended before the answer was complete")

    # ------------------------------------------------------------------ outcomes

    def _on_error(self, entry: _Entry, err: UpstreamError, t0: float) -> None:
        now = self._clock()
        UPSTREAM_DURATION.labels(outcome=err.error_class, **entry.label).observe(now - t0)
        PROVIDER_ERRORS.labels(error=err.error_class, **entry.label).inc()
        entry.stats.last_error = err.error_class
        entry.stats.last_error_at = now
        if err.error_class == "credentials" or (
            err.error_class == "4xx" and not err.fails_over(entry.retry_on)
        ):
            # The request itself was refused: says nothing about the provider's health.
            entry.breaker.record_neutral()
        else:
            entry.breaker.record_failure()
        log.warning(
            "upstream attempt failed: provider=%s model=%s error=%s detail=%s",
            entry.config.id,
            entry.config.model,
            err.error_class,
            err.detail,
        )

    def _on_success(self, entry: _Entry, t0: float, input_tokens: int, output_tokens: int) -> None:
        now = self._clock()
        entry.breaker.record_success()
        entry.stats.last_success_at = now
        UPSTREAM_DURATION.labels(outcome="ok", **entry.label).observe(now - t0)
        if input_tokens:
            TOKENS.labels(direction="input", **entry.label).inc(input_tokens)
        if output_tokens:
            TOKENS.labels(direction="output", **entry.label).inc(output_tokens)

    def _retry_delay(self, entry: _Entry, err: UpstreamError, attempt: int, deadline: float) -> float | None:
        """Seconds to wait before retrying on the same entry, or None to move on."""
        if attempt >= entry.max_attempts or not err.retryable(entry.retry_on):
            return None
        if err.retry_after is not None and err.retry_after > entry.max_backoff:
            # The provider asks for a longer pause than we would wait: the next provider serves sooner.
            return None
        delay = backoff_delay(attempt, entry.initial_backoff, entry.max_backoff, retry_after=err.retry_after)
        if self._clock() + delay >= deadline:
            return None
        return delay

    async def _retry_or_fail(
        self, entry: _Entry, request: ChatRequest, err: UpstreamError, attempt: int, deadline: float
    ) -> _Failure | None:
        """After a failed attempt: wait out the backoff and return None to try the entry again,
        or return the entry's failure when it is not retried (or may no longer be used)."""
        delay = self._retry_delay(entry, err, attempt, deadline)
        if delay is None:
            return _Failure(entry, err, attempt)
        RETRIES.labels(**entry.label).inc()
        await asyncio.sleep(delay)
        # Each retry asks the breaker and the provider quota again.
        return await self._prepare(entry, request, attempt)

    @staticmethod
    def _fails_over(failure: _Failure) -> bool:
        err = failure.error
        if err.error_class in ("circuit-open", "rate-limited", "credentials"):
            return True
        if err.detail == "deadline exceeded":
            return False
        return err.fails_over(failure.entry.retry_on)

    def _switch(self, previous: _Failure, entry: _Entry, phase: SwitchPhase) -> ProviderSwitch:
        FAILOVERS.labels(phase=phase, **previous.entry.label).inc()
        log.warning(
            "failover: from=%s to=%s phase=%s reason=%s",
            previous.entry.config.id,
            entry.config.id,
            phase,
            previous.error.error_class,
        )
        return ProviderSwitch(previous.entry.config.id, entry.config.id, phase, previous.error.error_class)

    def _final_error(self, failures: list[_Failure], deadline: float) -> LLMError:
        """One caller-facing error summarising every entry's failure, without upstream text."""
        summary = "; ".join(
            f"{f.entry.config.id} ({f.entry.config.model}): {f.error.error_class} {f.error.detail}"
            + (f" after {f.attempts} attempts" if f.attempts > 1 else "")
            for f in failures
        )
        classes = {f.error.error_class for f in failures}
        waits = [f.error.retry_after for f in failures if f.error.retry_after is not None]
        retry_after = min(waits) if waits else None
        last = failures[-1].error if failures else None
        if (
            last is not None
            and last.error_class == "4xx"
            and not last.fails_over(failures[-1].entry.retry_on)
        ):
            return LLMError(400, f"the provider refused the request: {summary}")
        if self._clock() >= deadline or (last is not None and last.detail == "deadline exceeded"):
            return LLMError(504, f"deadline exceeded: {summary}")
        if classes == {"timeout"}:
            return LLMError(504, f"every provider timed out: {summary}", retry_after)
        if classes <= {"429", "rate-limited"}:
            return LLMError(429, f"every provider is rate-limited: {summary}", retry_after or 1.0)
        if classes <= {"circuit-open", "credentials", "rate-limited"}:
            return LLMError(503, f"no provider is usable now: {summary}", retry_after)
        return LLMError(502, f"every provider failed: {summary}", retry_after)
