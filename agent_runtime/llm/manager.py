"""The LLM manager: the agent's failover chain over real upstream HTTP APIs.

For each request the chain is walked in order. Per entry: the circuit
breaker and the provider quota (``ProviderGate``) are asked first, the API
key is read from its file (so a rotated key applies to the very next
attempt), then up to ``retry.maxAttempts`` attempts are made with
exponential backoff and full jitter, honouring ``Retry-After``.

One failover loop (:meth:`LLMManager._events`) serves both ways of asking:
:meth:`LLMManager.stream` passes its events on, :meth:`LLMManager.complete`
gathers them into one :class:`Completion`; only the attempt differs
(``attempt.py``). What a failure means (retry, fail over, blame the
provider, which status the caller gets) is decided by its type
(``errors.py``).

Failover happens on retryable errors (and on provider-scoped 4xx such as a
wrong key). Before the first token it is invisible to the caller except for
a ``ProviderSwitch`` event; after tokens were streamed, the next provider is
asked to *continue* the partial answer, so the caller's stream simply goes on
(``ProviderSwitch(phase="mid_stream")`` lets the agent say so in metadata).

Timeouts: connect, first token and idle gap between chunks (``attempt.py``),
and one overall deadline shared by all attempts and failovers.

Steps: a step of the chain may hold several members (``llm.steps``); its
balancer (``balance.py``) orders them for each request, and the loop walks
that order before moving to the next step: the pick first, then the step's
other members, then the next step. Members of such a step count their
in-flight attempts and latency for the balancer.

Config reloads swap an immutable snapshot (``entries.py``): a request keeps
the chain it started with; connection pools (``pool.py``) and breakers of
unchanged upstreams are kept.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Protocol, cast

from agent_runtime import devbus, spend
from agent_runtime.config import LLMRuntimeConfig
from agent_runtime.llm.attempt import complete_attempt, max_tokens_of, stream_attempt
from agent_runtime.llm.balance import MemberLoad
from agent_runtime.llm.breaker import CircuitBreaker
from agent_runtime.llm.entries import Entry, Snapshot, Stats, Step, build_snapshot, meter
from agent_runtime.llm.errors import (
    AllFailed,
    AllRateLimited,
    CircuitOpen,
    DeadlineExceeded,
    InvalidProviderConfig,
    LLMError,
    MissingCredentials,
    NoneUsable,
    NotAttempted,
    QuotaExhausted,
    Refused,
    RequestRefused,
    Throttled,
    TimedOut,
    TimedOutOverall,
    UpstreamError,
)
from agent_runtime.llm.pool import ReadFile, UpstreamPools
from agent_runtime.llm.providers.base import StreamState
from agent_runtime.llm.retry import backoff_delay
from agent_runtime.llm.types import (
    ChatRequest,
    Completed,
    Completion,
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
from agent_runtime.tracing import AttemptTrace
from agent_runtime.tracing import current as current_trace

log = logging.getLogger("agent_runtime.llm")


class ProviderGate(Protocol):
    """Provider-side quota (LLMProvider ``limits``), shared by every agent using the provider.

    A refusal is treated like a 429 from that provider: the manager fails over.
    """

    def acquire(self, provider_id: str, tokens: int) -> bool | Awaitable[bool]:
        """Take ``tokens`` (input + expected output) and one request from the provider's budget."""
        ...


@dataclass(slots=True, eq=False)
class _Failure:
    entry: Entry
    error: UpstreamError
    attempts: int


def _trace_skip(entry: Entry, error_class: str) -> None:
    """Note on the request's trace that ``entry`` was not tried (looked up only on this rare path)."""
    trace = current_trace()
    if trace is not None:
        trace.skipped(entry, error_class)


def _walk(snap: Snapshot) -> Iterable[Entry]:
    """The entries in the order this request tries them: the chain itself, or step by step."""
    if snap.steps is None:
        return snap.entries
    return _walk_steps(snap.steps)


def _walk_steps(steps: tuple[Step | Entry, ...]) -> Iterator[Entry]:
    # Lazily: a step orders its members when the request reaches it, with the load of that moment.
    for step in steps:
        if isinstance(step, Step):
            yield from step.walk()
        else:
            yield step


def estimate_tokens(request: ChatRequest, max_tokens: int | None) -> int:
    """Rough input + output token count (4 characters a token) for provider quotas."""
    if request.estimated_tokens is not None:
        return request.estimated_tokens
    chars = sum(len(m.content) for m in request.messages)
    return chars // 4 + 1 + (max_tokens or 0)


def _publish_attempt(bus: devbus.DevBus, entry: Entry, outcome: str, seconds: float, **detail: Any) -> None:
    """Dev mode: one upstream attempt on the capture bus (``detail``: status or tokens)."""
    bus.publish(
        "attempt",
        provider=entry.config.id,
        model=entry.config.model,
        outcome=outcome,
        ms=round(seconds * 1000, 2),
        **detail,
    )


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
        self._pools = UpstreamPools(read_file)
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._stats: dict[tuple[str, str], Stats] = {}
        self._loads: dict[tuple[str, str], MemberLoad] = {}
        # The credential text each key file held when last looked at (kept only to notice a change;
        # it is the same object the credential cache already holds, never logged).
        self._credential_seen: dict[str, str | None] = {}
        self._snapshot = build_snapshot(config, self._breakers, self._stats, clock, self._loads)

    # ------------------------------------------------------------------ config

    def reload(self, config: LLMRuntimeConfig) -> None:
        """Swap in a new chain atomically; in-flight requests finish on the one they started with.

        Connection pools of upstreams still in use are kept; the others are
        closed once requests that may still use them had time to finish.
        """
        snapshot = build_snapshot(config, self._breakers, self._stats, self._clock, self._loads)
        old = self._snapshot
        self._snapshot = snapshot
        self._pools.keep_only({e.pool_key for e in snapshot.entries}, retire_after=old.total)
        log.info(
            "llm chain reloaded",
            extra={"chain": [f"{e.config.id}:{e.config.model}" for e in snapshot.entries]},
        )

    async def aclose(self) -> None:
        """Close every connection pool."""
        await self._pools.aclose()

    @property
    def config(self) -> LLMRuntimeConfig:
        """The chain in force."""
        return self._snapshot.config

    # ------------------------------------------------------------------ health

    def _credentials_state(self, entry: Entry) -> str:
        path = entry.config.credential_file
        if path is None:
            return "none"
        value = self._read_file(path)
        return "present" if value and value.strip() else "missing"

    def _follow_credential(self, entry: Entry) -> None:
        """Close the breakers of ``entry``'s provider when its key file's content changed.

        A breaker opened by a wrong key would otherwise keep refusing the right one for the
        whole cool-down; with a new key the provider deserves a fresh verdict at once.
        """
        path = entry.config.credential_file
        if path is None:
            return
        value = self._read_file(path)
        if path not in self._credential_seen:
            self._credential_seen[path] = value
            return
        seen = self._credential_seen[path]
        # The credential cache returns the same object until the file changes: usually free.
        if value is seen or value == seen:
            return
        self._credential_seen[path] = value
        closed = []
        for other in self._snapshot.entries:
            if other.config.credential_file == path and other.breaker.state != "closed":
                other.breaker.reset()
                closed.append(f"{other.config.id}:{other.config.model}")
        if closed:
            log.info("provider credential changed; circuit breaker closed", extra={"entries": closed})

    def credentials_changed(self) -> None:
        """Look at every key file now (the credentials directory changed)."""
        for entry in self._snapshot.entries:
            self._follow_credential(entry)

    def usable(self) -> bool:
        """At least one entry has its credentials and a breaker that lets requests through."""
        self.credentials_changed()
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
        switches: list[ProviderSwitch] = []
        completion: Completion | None = None
        # Read to the end (the Completion is the last event, then the loop returns): nothing is
        # left suspended, so no aclose() is needed, and an LLMError comes out of the loop itself.
        async for event in self._events(request, deadline, streamed=False):
            if type(event) is Completion:
                completion = event
            elif isinstance(event, ProviderSwitch):
                switches.append(event)
        assert completion is not None, "the failover loop ends with a Completion or an LLMError"
        completion.switches = switches
        return completion

    def stream(
        self, request: ChatRequest, *, deadline: float | None = None
    ) -> AsyncGenerator[LLMEvent, None]:
        """Stream the answer as events; raise :class:`LLMError` when no provider can give it.

        ``deadline`` is an absolute ``time.monotonic()`` value shared by every attempt and
        failover (default: now + the first entry's ``timeouts.total``).

        The consumer should close the iterator when it stops early (``contextlib.aclosing``):
        that closes the upstream HTTP response at once.
        """
        # The loop's own generator, not a wrapper around it: one hop less per event. Streamed,
        # it yields LLMEvents only (a Completion only when not streamed).
        return cast(AsyncGenerator[LLMEvent, None], self._events(request, deadline, streamed=True))

    async def _events(
        self, request: ChatRequest, deadline: float | None, *, streamed: bool
    ) -> AsyncGenerator[LLMEvent | Completion, None]:
        """The failover loop: walk the chain, retrying each entry, until one answers.

        ``streamed`` chooses the attempt (SSE pieces as they come, then ``Usage`` and
        ``Completed``; or one whole answer given as a single :class:`Completion` once it
        succeeded); everything else (breakers, quotas, retries, failover, metrics, the final
        error) is shared.
        """
        snap = self._snapshot
        start = self._clock()
        deadline = start + snap.total if deadline is None else deadline
        parts: list[str] = []
        failures: list[_Failure] = []
        previous: _Failure | None = None
        phase: SwitchPhase = "before_first_token"
        first_token_seen = False
        # The request's trace (None when tracing is off: then nothing below costs more than a test).
        trace = current_trace()
        span: AttemptTrace | None = None
        trace_headers: Mapping[str, str] | None = None
        first_part = 0
        for position, entry in enumerate(_walk(snap)):
            if previous is not None:
                if trace is not None:
                    trace.failover(previous.entry, entry, phase, previous.error.error_class)
                yield self._switch(previous, entry, phase)
            failure = await self._prepare(entry, request)
            attempt = 0
            while failure is None:
                attempt += 1
                state = StreamState()
                t0 = self._clock()
                got_text = False
                whole = ""
                load = entry.load
                if load is not None:
                    load.started()
                if trace is not None:
                    span = trace.attempt(entry, request, attempt, position, streamed)
                    trace_headers = span.headers
                    first_part = len(parts)
                try:
                    api_key = self._api_key(entry)
                    upstream = self._pools.get(entry.pool_key, retire_after=entry.total)
                    remaining = deadline - t0
                    if streamed:
                        partial = "".join(parts) or None
                        pieces = stream_attempt(
                            entry, upstream, request, api_key, state, remaining, partial, trace_headers
                        )
                        async with aclosing(pieces):
                            async for text in pieces:
                                if not got_text:
                                    got_text = True
                                    if load is not None:
                                        now = self._clock()
                                        load.sample(now - t0, now)
                                    if not first_token_seen:
                                        first_token_seen = True
                                        meter(entry, TIME_TO_FIRST_TOKEN).observe(self._clock() - start)
                                parts.append(text)
                                yield TextDelta(text)
                    else:
                        whole = await complete_attempt(
                            entry, upstream, request, api_key, state, remaining, trace_headers
                        )
                except UpstreamError as err:
                    if span is not None:
                        span.failed(err.error_class, err.status)
                    self._on_error(entry, err, t0)
                    if got_text:
                        # The upstream generated (and may bill) tokens whose count never came.
                        spend.mark_unknown()
                        # Part of the answer went out: the next entry continues it.
                        phase = "mid_stream"
                        failure = _Failure(entry, err, attempt)
                    else:
                        failure = await self._retry_or_fail(entry, request, err, attempt, deadline)
                    continue
                except BaseException:
                    # Consumer went away (GeneratorExit) or the task was cancelled:
                    # no verdict on the provider's health.
                    entry.breaker.record_neutral()
                    if load is not None:
                        load.ended()
                    # The upstream may have generated (and billed) part of an answer.
                    spend.mark_unknown()
                    if span is not None:
                        span.abandoned()
                    raise
                if span is not None:
                    # This attempt's text only: a mid-stream continuation follows earlier parts.
                    span.succeeded(state, parts[first_part:] if streamed else [whole])
                self._on_success(entry, t0, state.input_tokens, state.output_tokens, streamed)
                spend.record(entry.price, state.input_tokens, state.output_tokens)
                if not streamed:
                    # One event for the whole answer: fewer resumptions of this generator.
                    yield Completion(
                        whole,
                        entry.config.id,
                        entry.config.model,
                        state.finish_reason,
                        state.input_tokens,
                        state.output_tokens,
                    )
                    return
                yield Usage(state.input_tokens, state.output_tokens)
                yield Completed(entry.config.id, entry.config.model, state.finish_reason)
                return
            failures.append(failure)
            if not failure.error.fails_over(entry.retry_on):
                break
            previous = failure
        raise self._final_error(failures, deadline)

    # ------------------------------------------------------------------ before an attempt

    async def _prepare(self, entry: Entry, request: ChatRequest, attempts: int = 0) -> _Failure | None:
        """Breaker and provider quota checks before every attempt on an entry."""
        self._follow_credential(entry)
        if not entry.breaker.acquire():
            retry_in = entry.breaker.retry_in()
            _trace_skip(entry, CircuitOpen.error_class)
            return _Failure(
                entry, CircuitOpen("circuit breaker open", retry_after=retry_in or None), attempts
            )
        if self._gate is not None:
            tokens = estimate_tokens(request, max_tokens_of(entry, request))
            try:
                allowed = self._gate.acquire(entry.config.id, tokens)
                if type(allowed) is not bool and inspect.isawaitable(allowed):
                    allowed = await allowed
            except BaseException:
                entry.breaker.record_neutral()
                raise
            if not allowed:
                entry.breaker.record_neutral()
                _trace_skip(entry, QuotaExhausted.error_class)
                return _Failure(entry, QuotaExhausted("provider quota exhausted"), attempts)
        return None

    def _api_key(self, entry: Entry) -> str | None:
        """The key for this attempt, read now so that a rotated key applies; None when keyless.

        Also refuses an entry whose configuration cannot go on the wire as is.
        """
        if entry.config_problem is not None:
            raise InvalidProviderConfig(entry.config_problem)
        path = entry.config.credential_file
        if path is None:
            return None
        value = self._read_file(path)
        if not value or not value.strip():
            raise MissingCredentials("API key file missing or empty")
        key = value.strip()
        if not key.isprintable():
            # A line break inside the key would end the header and start another one.
            raise MissingCredentials("API key file holds a line break or another control character")
        return key

    # ------------------------------------------------------------------ outcomes

    def _on_error(self, entry: Entry, err: UpstreamError, t0: float) -> None:
        now = self._clock()
        load = entry.load
        if load is not None:
            load.ended()
            if isinstance(err, TimedOut):
                # As slow as this at least: the balancer should know before the breaker opens.
                load.sample(now - t0, now)
        meter(entry, UPSTREAM_DURATION, "outcome", err.error_class).observe(now - t0)
        PROVIDER_ERRORS.labels(error=err.error_class, **entry.label).inc()
        entry.stats.last_error = err.error_class
        entry.stats.last_error_at = now
        if devbus.BUS is not None:
            _publish_attempt(devbus.BUS, entry, err.error_class, now - t0, status=err.status)
        if not err.blames_provider(entry.retry_on):
            # Our configuration, or the request itself was refused: says nothing about
            # the provider's health.
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

    def _on_success(
        self, entry: Entry, t0: float, input_tokens: int, output_tokens: int, streamed: bool
    ) -> None:
        now = self._clock()
        load = entry.load
        if load is not None:
            load.ended()
            if not streamed:
                # A streamed attempt was sampled at its first token (time to first token).
                load.sample(now - t0, now)
        entry.breaker.record_success()
        entry.stats.last_success_at = now
        meter(entry, UPSTREAM_DURATION, "outcome", "ok").observe(now - t0)
        if devbus.BUS is not None:
            _publish_attempt(
                devbus.BUS, entry, "ok", now - t0, input_tokens=input_tokens, output_tokens=output_tokens
            )
        if input_tokens:
            meter(entry, TOKENS, "direction", "input").inc(input_tokens)
        if output_tokens:
            meter(entry, TOKENS, "direction", "output").inc(output_tokens)

    def _retry_delay(self, entry: Entry, err: UpstreamError, attempt: int, deadline: float) -> float | None:
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
        self, entry: Entry, request: ChatRequest, err: UpstreamError, attempt: int, deadline: float
    ) -> _Failure | None:
        """After a failed attempt: wait out the backoff and return None to try the entry again,
        or return the entry's failure when it is not retried (or may no longer be used)."""
        delay = self._retry_delay(entry, err, attempt, deadline)
        if delay is None:
            return _Failure(entry, err, attempt)
        RETRIES.labels(**entry.label).inc()
        bus = devbus.BUS
        if bus is not None:
            bus.publish(
                "retry",
                provider=entry.config.id,
                attempt=attempt,
                delay=round(delay, 3),
                reason=err.error_class,
            )
        await asyncio.sleep(delay)
        # Each retry asks the breaker and the provider quota again.
        return await self._prepare(entry, request, attempt)

    def _switch(self, previous: _Failure, entry: Entry, phase: SwitchPhase) -> ProviderSwitch:
        FAILOVERS.labels(phase=phase, **previous.entry.label).inc()
        bus = devbus.BUS
        if bus is not None:
            bus.publish(
                "failover",
                source=previous.entry.config.id,
                target=entry.config.id,
                phase=phase,
                reason=previous.error.error_class,
            )
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
        errors = [f.error for f in failures]
        waits = [e.retry_after for e in errors if e.retry_after is not None]
        retry_after = min(waits) if waits else None
        last = failures[-1]
        if isinstance(last.error, Refused) and not last.error.fails_over(last.entry.retry_on):
            return RequestRefused(f"the provider refused the request: {summary}")
        if self._clock() >= deadline or isinstance(last.error, DeadlineExceeded):
            return TimedOutOverall(f"deadline exceeded: {summary}")
        if all(isinstance(e, TimedOut) for e in errors):
            return TimedOutOverall(f"every provider timed out: {summary}", retry_after)
        if all(isinstance(e, Throttled | QuotaExhausted) for e in errors):
            return AllRateLimited(f"every provider is rate-limited: {summary}", retry_after or 1.0)
        if all(isinstance(e, NotAttempted) for e in errors):
            return NoneUsable(f"no provider is usable now: {summary}", retry_after)
        return AllFailed(f"every provider failed: {summary}", retry_after)
