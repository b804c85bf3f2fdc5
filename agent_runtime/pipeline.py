"""The one request pipeline every route goes through.

    authenticate -> read and validate the body -> admit under limits -> guard the input (when the
    agent has guardrails) -> run -> audit and measure

A route (:class:`Route`) says which steps it needs (authentication, a body
model, admission) and how its refusals look on the wire (:class:`ErrorWriter`:
``error`` + ``done`` events on ``/assist``, OpenAI's JSON error elsewhere);
the pipeline does the rest, so each rule is written once: every refusal of
authentication is counted and audited here, every rate-limit rejection too,
every exchange is measured (status and real latency) when it ends, an
unexpected exception is a logged 500 and never a response counted as 200.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from agent_runtime import devbus, metrics, spend
from agent_runtime.auth import AuthError, Principal
from agent_runtime.guardrails.engine import BLOCKED_CODE, Guardrails
from agent_runtime.guardrails.engine import Context as GuardContext
from agent_runtime.http import (
    BodyTooLarge,
    ClientGone,
    Exchange,
    Pulse,
    Receive,
    Scope,
    Send,
    read_body,
    supervise,
)
from agent_runtime.http.exchange import (
    MAX_BODY_BYTES,
    STATUS_CLIENT_CLOSED,
    disconnect_watch,
    wait_disconnect,
)
from agent_runtime.lifecycle import Lifecycle, RuntimeState
from agent_runtime.limits.policy import ALLOW_ALL, Admission
from agent_runtime.llm import LLMError
from agent_runtime.logging import REQUEST_ID
from agent_runtime.tracing import CURRENT as CURRENT_TRACE

log = logging.getLogger("agent_runtime.pipeline")

_KNOWN_CODES = frozenset({400, 401, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503, 504})


class _DrainEnded(Exception):
    """The shutdown grace ran out while the request was still being received."""


@dataclass(slots=True)
class Call:
    """One request on its way through the pipeline."""

    ex: Exchange
    runtime: Lifecycle
    # Who the errors of this call come from (the ``source`` of /assist events).
    source: str
    state: RuntimeState | None = None
    principal: Principal | None = None
    body: Any = None
    # Rate-limit headers to put on the answer.
    headers: dict[str, str] = field(default_factory=dict)
    # What the route prepared for its run step.
    data: Any = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """A whole refusal or failure: ``code`` is a short stable word, ``details`` structured context."""

    status: int
    message: str
    code: str | None = None
    details: Mapping[str, Any] | None = None
    extra: Mapping[str, str] | None = None
    close: bool = False


# Writes a refusal in the route family's own shape (SSE events, OpenAI's JSON error, plain JSON).
ErrorWriter = Callable[[Call, Refusal], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Admit:
    """What admission needs: the session a budget may be counted per, and a token estimate
    (prompt + output), of which ``output`` is the output part (spend budgets price the two apart)."""

    session_id: str | None
    estimate: Callable[[], int]
    output: Callable[[], int] | None = None


@dataclass(frozen=True, slots=True)
class Guarded:
    """The caller's texts of a prepared request, as the input guardrails read and rewrite them."""

    read: Callable[[Call], list[str]]
    write: Callable[[Call, list[str]], None]


@dataclass(frozen=True, slots=True)
class Route:
    """One route: the steps it takes and its own prepare and run steps."""

    path: str
    methods: tuple[str, ...]
    errors: ErrorWriter
    run: Callable[[Call], Awaitable[int | None]]
    authenticate: bool = False
    body: type[BaseModel] | None = None
    # After the body: what admission under limits needs (None: not admitted).
    prepare: Callable[[Call], Awaitable[Admit | None]] | None = None
    # Counted in flight (a drain waits for it) and refused while draining.
    tracked: bool = False
    # The texts the input guardrails check (None: the route has none).
    guarded: Guarded | None = None


@dataclass(frozen=True, slots=True)
class Work:
    """How the supervised work of a request ended."""

    task: asyncio.Task[Any]
    disconnected: bool
    forced: bool


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """How work run in the request's own task ended: its value, or the exception it raised.

    ``cancelled``: a drain ended it (``forced``) or the client went away (``disconnected``).
    """

    value: T | None
    error: Exception | None
    disconnected: bool
    forced: bool
    cancelled: bool


def validation_message(exc: ValidationError) -> str:
    """A short, clear description of what is wrong with a body."""
    problems = []
    for error in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        problems.append(f"{where}: {error['msg']}")
    return "invalid request body: " + "; ".join(problems)


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json"


# What a caller is told when the model providers fail: a stable code and message per status.
# The manager's own message names providers, models and error classes: it goes to the log only.
_UPSTREAM_ERRORS: dict[int, tuple[str, str]] = {
    400: ("upstream_refused", "the model provider refused the request"),
    429: ("upstream_rate_limited", "every model provider is rate-limited; retry later"),
    502: ("upstream_failed", "the model providers failed to answer"),
    503: ("upstream_unavailable", "no model provider is available now"),
    504: ("upstream_timeout", "the model providers did not answer in time"),
}


@dataclass(frozen=True, slots=True)
class UpstreamFailure:
    """What the caller is told about an :class:`LLMError`."""

    status: int
    code: str
    message: str
    request_id: str
    retry_after: float | None


def upstream_failure(call: Call, exc: LLMError) -> UpstreamFailure:
    """The caller-facing form of an LLM failure; the details are logged with the request id."""
    code, message = _UPSTREAM_ERRORS.get(exc.status, ("upstream_error", "the model request failed"))
    log.warning("LLM request failed: %s", exc.message, extra={"status": exc.status, "route": call.ex.route})
    return UpstreamFailure(exc.status, code, message, call.ex.request_id, exc.retry_after)


def count_agent_error(route: str, code: object) -> None:
    """Count an error event; unusual codes share one label value so the label set stays bounded."""
    label = str(code) if code in _KNOWN_CODES else "other"
    metrics.AGENT_ERRORS.labels(route=route, code=label).inc()


class Pipeline:
    """Serves routes over one runtime lifecycle."""

    def __init__(self, runtime: Lifecycle) -> None:
        self.runtime = runtime

    def handler(self, route: Route) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
        """The ASGI callable of ``route``."""
        # A partial, not a closure awaiting serve(): one coroutine less per request.
        return functools.partial(self.serve, route)

    async def serve(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        """One exchange on ``route``, measured when it ends whatever happens."""
        ex = Exchange(scope, receive, send, route.path)
        token = REQUEST_ID.set(ex.request_id)
        runtime = self.runtime
        call = Call(ex, runtime, runtime.config.agent.name)
        # Traced: the API routes (tracked), not probes or /metrics; None when tracing is off.
        tracing = runtime.tracing if route.tracked else None
        trace = tracing.start_request(ex, route.path) if tracing is not None else None
        trace_token = CURRENT_TRACE.set(trace) if trace is not None else None
        if route.tracked:
            runtime.enter()
        bus = devbus.BUS
        if bus is not None:
            bus.publish("request.start", ex.request_id, route=route.path, method=ex.method)
        try:
            await self._steps(route, call)
        except Exception:
            log.exception("request failed")
            if not ex.started:
                await self._refuse(route, call, 500, "internal error")
            ex.status = 500
        finally:
            if route.tracked:
                runtime.leave()
            ex.finish()
            if bus is not None:
                _publish_end(bus, call)
            REQUEST_ID.reset(token)
            if trace is not None:
                trace.end(ex.status)
            if trace_token is not None:
                CURRENT_TRACE.reset(trace_token)

    async def _steps(self, route: Route, call: Call) -> None:
        ex, runtime = call.ex, self.runtime
        if ex.method not in route.methods:
            # The Allow field lists every method the route supports (RFC 9110, 15.5.6).
            await self._refuse(
                route,
                call,
                405,
                f"method not allowed; use {route.methods[0]}",
                extra={"allow": ", ".join(route.methods)},
            )
            return
        if "host" not in ex.headers and ex.scope.get("http_version") != "1.0":
            # HTTP/1.1 makes Host mandatory (RFC 9112, 3.2); only HTTP/1.0 clients may omit it.
            await self._refuse(route, call, 400, "a Host header is required", code="missing_host")
            return
        if ex.repeated_host:
            # RFC 9112, 3.2: more than one Host field line is a 400, whatever the version.
            await self._refuse(route, call, 400, "one Host header at most", code="duplicate_host")
            return
        if route.tracked and not runtime.accepting:
            await self._refuse(route, call, 503, "the agent is shutting down", close=True)
            return
        if route.authenticate:
            state = runtime.current
            if state is None:
                await self._refuse(route, call, 503, "the agent is not started", close=True)
                return
            call.state = state
            try:
                call.principal = await self.authenticate(ex, call.state)
            except AuthError as exc:
                await self._refuse(
                    route, call, exc.status, exc.message, code=exc.reason, details={"reason": exc.reason}
                )
                return
        if route.body is not None:
            content_type = ex.headers.get("content-type")
            if content_type != "application/json" and not _is_json(content_type):
                await self._refuse(
                    route,
                    call,
                    415,
                    "the body must be JSON (Content-Type: application/json)",
                    code="unsupported_media_type",
                )
                return
            try:
                call.body = route.body.model_validate_json(await self._read_body(ex))
            except _DrainEnded:
                await self._refuse(route, call, 503, "the agent is shutting down", close=True)
                return
            except BodyTooLarge:
                await self._refuse(route, call, 413, f"request body larger than {MAX_BODY_BYTES} bytes")
                return
            except ClientGone:
                ex.status = STATUS_CLIENT_CLOSED
                return
            except ValidationError as exc:
                await self._refuse(route, call, 422, validation_message(exc))
                return
        if route.authenticate and not await self.authorize(route, call):
            return
        admission = ALLOW_ALL
        if route.prepare is not None:
            admit = await route.prepare(call)
            if admit is not None:
                admission = await self.admit(call, admit)
                if not admission.allowed:
                    limited = admission.status == 429
                    await self._refuse(
                        route,
                        call,
                        admission.status,
                        admission.reason
                        or ("rate limit exceeded" if limited else "rate limiter unavailable"),
                        code=admission.limit,
                        details={
                            "limit": admission.limit,
                            "retry_after": admission.retry_after,
                            **(admission.details or {}),
                        },
                        extra=admission.headers,
                    )
                    return
                call.headers = admission.headers
        usage: int | None = None
        # The spend budgets' meter: the LLM manager records each answer's cost into it.
        metered = spend.CURRENT_METER.set(admission.spend.meter) if admission.spend is not None else None
        try:
            # After admission, so that refused requests count against the caller's budget too.
            guardrails = call.state.guardrails if call.state is not None else None
            if (
                route.guarded is not None
                and guardrails is not None
                and not await self.screen_input(route, route.guarded, call, guardrails)
            ):
                usage = 0
                return
            usage = await route.run(call)
        finally:
            await admission.settle(usage)
            if metered is not None:
                spend.CURRENT_METER.reset(metered)

    async def _read_body(self, ex: Exchange) -> bytes:
        """The body; a drain that runs out of time ends a slow upload instead of waiting on it."""
        task = asyncio.current_task()
        if task is None:
            return await read_body(ex.receive)
        self.runtime.track(task)
        try:
            return await read_body(ex.receive)
        except asyncio.CancelledError:
            if self.runtime.untrack(task):
                # Our own drain cancelled the read: answer it rather than die with it.
                task.uncancel()
                raise _DrainEnded from None
            raise
        finally:
            self.runtime.untrack(task)

    def _audit(self, event: str, **fields: Any) -> None:
        """An audit record, where the runtime keeps an audit log."""
        audit = self.runtime.audit
        if audit is not None:
            audit.record(event, **fields)

    @staticmethod
    async def _refuse(route: Route, call: Call, status: int, message: str, **fields: Any) -> None:
        await route.errors(call, Refusal(status, message, **fields))

    async def authenticate(self, ex: Exchange, state: RuntimeState) -> Principal:
        """The one authentication path of every route: refusals are counted and audited here."""
        try:
            if ex.repeated_credentials:
                raise AuthError(401, "duplicate_credentials", "more than one credential header")
            return await state.auth.authenticate(ex.headers)
        except AuthError as exc:
            metrics.AUTH_FAILURES.labels(reason=exc.reason).inc()
            self._audit(
                "auth.failure",
                reason=exc.reason,
                status=exc.status,
                route=ex.route,
                request_id=ex.request_id,
                client=ex.client,
            )
            raise

    async def authorize(self, route: Route, call: Call) -> bool:
        """The caller's roles against the route and requested model: False when refused (403, here)."""
        state, principal = call.state, call.principal
        if state is None or principal is None or state.auth.roles is None:
            return True
        model = getattr(call.body, "model", None)
        try:
            call.principal = state.auth.authorize(
                principal, call.ex.route, model if isinstance(model, str) else None
            )
        except AuthError as exc:
            metrics.AUTHZ_DENIALS.labels(reason=exc.reason, route=call.ex.route).inc()
            self._audit(
                "authz.deny",
                reason=exc.reason,
                status=exc.status,
                principal=principal.id,
                kind=principal.kind,
                roles=list(principal.roles),
                route=call.ex.route,
                request_id=call.ex.request_id,
            )
            await self._refuse(
                route, call, exc.status, exc.message, code=exc.reason, details={"reason": exc.reason}
            )
            return False
        return True

    async def screen_input(self, route: Route, guarded: Guarded, call: Call, guardrails: Guardrails) -> bool:
        """The input guardrails: False when they blocked the request (refused here)."""
        if not guardrails.input:
            return True
        principal = call.principal.id if call.principal is not None else None
        context = GuardContext(call.ex.route, call.ex.request_id, principal)
        screening = await guardrails.screen("input", guarded.read(call), context)
        if screening.blocked is not None:
            await self._refuse(
                route,
                call,
                400,
                "the request was blocked by a guardrail",
                code=BLOCKED_CODE,
                details=screening.refusal_details(),
            )
            return False
        if screening.redacted:
            guarded.write(call, screening.texts)
        return True

    async def admit(self, call: Call, admit: Admit) -> Admission:
        """Rate-limit admission; the token estimate is computed only when a policy applies."""
        limiter = self.runtime.limiter
        if limiter is None or not limiter.enabled:
            return ALLOW_ALL
        principal = call.principal
        assert principal is not None, "admission needs an authenticated route"
        subject = limiter.subject(principal, admit.session_id)
        estimate = admit.estimate()
        admission: Admission = await limiter.admit(subject, estimate)
        if limiter.budgets is not None and call.state is not None:
            # Without an output share the whole estimate is priced both ways (never below the truth).
            output = admit.output() if admit.output is not None else estimate
            prompt = max(0, estimate - output) if admit.output is not None else estimate
            admission = await limiter.admit_spend(
                admission, principal, call.state.config.llm.chain, prompt, output
            )
        bus = devbus.BUS
        if bus is not None:
            bus.publish(
                "ratelimit",
                call.ex.request_id,
                allowed=admission.allowed,
                status=admission.status,
                limit=admission.limit,
                subject=subject.kind,
                tier=subject.tier,
                retry_after=admission.retry_after,
                headers=dict(admission.headers),
            )
        if not admission.allowed:
            metrics.RATE_LIMIT_REJECTIONS.labels(limit=admission.limit or "unknown", scope=subject.kind).inc()
            self._audit(
                "ratelimit.reject",
                limit=admission.limit,
                status=admission.status,
                subject=subject.kind,
                principal=principal.id,
                route=call.ex.route,
                request_id=call.ex.request_id,
            )
        return admission


def _publish_end(bus: devbus.DevBus, call: Call) -> None:
    """Dev mode: the end of a request, with its caller (never a credential) and real latency."""
    ex, principal = call.ex, call.principal
    bus.publish(
        "request.end",
        ex.request_id,
        route=ex.route,
        status=ex.status,
        ms=round((time.perf_counter() - ex.t0) * 1000, 2),
        caller=None
        if principal is None
        else {"id": principal.id, "kind": principal.kind, "tier": principal.tier},
    )


async def run_work(
    call: Call, work: Coroutine[Any, Any, Any], pulse: Pulse | None = None, heartbeat: float = 0.0
) -> Work:
    """Run the work of a request as a task a drain can end, watching the client while it runs."""
    task = asyncio.get_running_loop().create_task(work)
    call.runtime.track(task)
    try:
        disconnected = await supervise(call.ex, task, pulse, heartbeat)
    finally:
        forced = call.runtime.untrack(task)
    if disconnected:
        _client_gone(call)
    return Work(task, disconnected, forced)


def _client_gone(call: Call) -> None:
    call.ex.status = STATUS_CLIENT_CLOSED
    metrics.CLIENT_DISCONNECTS.labels(route=call.ex.route).inc()
    log.info("client disconnected; work cancelled")


def _cancel_gone(task: asyncio.Task[Any], gone: list[bool]) -> None:
    gone.append(True)
    task.cancel()


async def _cancel_on_disconnect(receive: Receive, task: asyncio.Task[Any], gone: list[bool]) -> None:
    await wait_disconnect(receive)
    _cancel_gone(task, gone)


async def run_inline(call: Call, work: Awaitable[T]) -> Outcome[T]:
    """Run work that writes nothing until it ends (a whole answer) in the request's own task.

    What :func:`run_work` does for it, without a task of its own and the hops to wait for
    it (a quarter of the loop's wakeups of a non-streamed request): this task is cancelled
    when the client goes away (told by the runtime's own protocol, else seen by a watcher
    task) and by a drain as tracked work; either cancellation ends here, any other propagates.
    """
    task = asyncio.current_task()
    assert task is not None, "a request runs in a task"
    runtime = call.runtime
    gone: list[bool] = []
    # The runtime's own server tells of a disconnect at once; any other is asked through receive().
    watch = disconnect_watch(call.ex.scope)
    watcher: asyncio.Task[None] | None = None
    if watch is not None:
        watch.on_gone(lambda: _cancel_gone(task, gone))
    else:
        watcher = asyncio.get_running_loop().create_task(_cancel_on_disconnect(call.ex.receive, task, gone))
    runtime.track(task)
    value: T | None = None
    error: Exception | None = None
    cancelled = False
    try:
        value = await work
    except asyncio.CancelledError:
        cancelled = True
    except Exception as exc:
        error = exc
    finally:
        forced = runtime.untrack(task)
        if watch is not None:
            watch.on_gone(None)
        elif watcher is not None and not watcher.done():
            watcher.cancel()
    if cancelled:
        if not gone and not forced:
            # Not ours to answer (the server is ending the request): let it end.
            raise asyncio.CancelledError
        task.uncancel()
    if gone:
        _client_gone(call)
    return Outcome(value, error, bool(gone), forced, cancelled)
