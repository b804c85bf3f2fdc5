"""The agent runtime's ASGI application: routes, lifecycle, hot reload, graceful shutdown.

Hot routes (``POST /assist``, ``POST /v1/chat/completions``) are plain ASGI
callables dispatched by a dict lookup: Starlette's request/response objects
and middleware would wrap every streamed chunk. The rest (probes, agent card,
models, metrics) is an ordinary Starlette app, which also runs the lifespan.

Per request: auth -> body validation -> rate-limit admission (before any
upstream call) -> agent -> settle with real usage. Every request works on one
immutable :class:`RuntimeState` snapshot taken when it starts, so a config
reload applies to the next request and never half-way through one.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent_runtime import metrics, protocol
from agent_runtime.audit import AuditLog, open_audit_log
from agent_runtime.auth import Authenticator, AuthError, Principal
from agent_runtime.config import RuntimeConfig, duration_seconds, load_config
from agent_runtime.limits.policy import ALLOW_ALL, Admission, build_limiter, estimate_tokens
from agent_runtime.limits.provider_gate import build_provider_gate, provider_limits
from agent_runtime.llm import LLMError, LLMManager
from agent_runtime.logging import REQUEST_ID, accept_request_id
from agent_runtime.reload import DEFAULT_WATCH_INTERVAL, CredentialFiles, FileWatcher
from agent_runtime.sdk import (
    AbstractAgent,
    AgentContext,
    AgentError,
    Identity,
    Query,
    ResponseHandler,
    Session,
)
from agent_runtime.sessions import OwnedSessions, SessionStore, SessionStoreError, build_session_store

log = logging.getLogger("agent_runtime.app")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIHandler = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 1 << 20
# Headers that carry a credential: a request may hold each at most once.
CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key"})
STATUS_CLIENT_CLOSED = 499


# ----------------------------------------------------------------------------- request bodies


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", str_max_length=1 << 20)


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


def validation_message(exc: ValidationError) -> str:
    """A short, clear description of what is wrong with a body."""
    problems = []
    for error in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        problems.append(f"{where}: {error['msg']}")
    return "invalid request body: " + "; ".join(problems)


class BodyTooLarge(Exception):
    """The request body exceeds :data:`MAX_BODY_BYTES`."""


class ClientGone(Exception):
    """The client disconnected before the body was read."""


async def read_body(receive: Receive, limit: int = MAX_BODY_BYTES) -> bytes:
    """The whole request body."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone
    body = message.get("body", b"")
    if not message.get("more_body"):
        if len(body) > limit:
            raise BodyTooLarge
        return bytes(body)
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


# ----------------------------------------------------------------------------- exchange


_status_children: dict[tuple[str, int], Any] = {}
_duration_children: dict[str, Any] = {}


def _count(route: str, status: int, seconds: float) -> None:
    child = _status_children.get((route, status))
    if child is None:
        child = _status_children[(route, status)] = metrics.REQUESTS.labels(route=route, status=str(status))
    child.inc()
    hist = _duration_children.get(route)
    if hist is None:
        hist = _duration_children[route] = metrics.REQUEST_DURATION.labels(route=route)
    hist.observe(seconds)


class Exchange:
    """One HTTP exchange on a hot route: headers, request id, response start, accounting."""

    __slots__ = (
        "headers",
        "receive",
        "repeated_credentials",
        "request_id",
        "route",
        "scope",
        "send",
        "started",
        "status",
        "t0",
    )

    def __init__(self, scope: Scope, receive: Receive, send: Send, route: str) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.route = route
        self.t0 = time.perf_counter()
        self.started = False
        self.status = 200
        headers: dict[str, str] = {}
        repeated = False
        for name, value in scope["headers"]:
            key = name.decode("latin-1").lower()
            if key in headers and key in CREDENTIAL_HEADERS:
                repeated = True
            headers[key] = value.decode("latin-1")
        self.headers = headers
        # Two credentials in one request are ambiguous (the last would win): the auth path refuses them.
        self.repeated_credentials = repeated
        self.request_id = accept_request_id(headers.get("x-request-id")) or protocol.new_ulid()

    async def start(
        self, status: int, content_type: bytes, extra: Mapping[str, str] | None = None, close: bool = False
    ) -> None:
        """Send the status line and headers."""
        self.status = status
        self.started = True
        raw = [(b"content-type", content_type), (b"x-request-id", self.request_id.encode())]
        if content_type.startswith(b"text/event-stream"):
            raw.append((b"cache-control", b"no-cache"))
            raw.append((b"x-accel-buffering", b"no"))
        if extra:
            raw.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items())
        if close:
            raw.append((b"connection", b"close"))
        await self.send({"type": "http.response.start", "status": status, "headers": raw})

    async def body(self, data: bytes, more: bool = True) -> None:
        """Send part of the body."""
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def json(
        self, status: int, payload: Any, extra: Mapping[str, str] | None = None, close: bool = False
    ) -> None:
        """A whole JSON response."""
        await self.start(status, b"application/json", extra, close)
        await self.body(protocol.dumps(payload).encode(), more=False)

    async def sse_error(
        self,
        status: int,
        source: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        extra: Mapping[str, str] | None = None,
        close: bool = False,
    ) -> None:
        """A whole /assist response that failed before the agent ran: ``error`` then ``done``."""
        await self.start(status, protocol.SSE_CONTENT_TYPE, extra, close)
        await self.body(protocol.error_and_done(source, message, status, details), more=False)

    def finish(self) -> None:
        """Record metrics (and, at debug level, an access log line) for the exchange."""
        seconds = time.perf_counter() - self.t0
        _count(self.route, self.status, seconds)
        if self.status >= 500:
            log.warning("request failed", extra={"route": self.route, "status": self.status})
        elif log.isEnabledFor(logging.DEBUG):
            log.debug(
                "request served",
                extra={"route": self.route, "status": self.status, "ms": round(seconds * 1000, 2)},
            )


class Pulse:
    """Writes of one streamed response: serialised by one lock, counted for heartbeats."""

    __slots__ = ("content_type", "count", "ex", "extra", "lock", "status")

    def __init__(
        self,
        ex: Exchange,
        extra: Mapping[str, str] | None = None,
        content_type: bytes = protocol.SSE_CONTENT_TYPE,
    ) -> None:
        self.ex = ex
        self.extra = extra
        self.content_type = content_type
        self.lock = asyncio.Lock()
        self.count = 0
        # Status of the response if it has not started yet when it is first written.
        self.status = 200

    async def _ensure_started(self) -> None:
        if not self.ex.started:
            await self.ex.start(self.status, self.content_type, self.extra)

    async def write(self, data: bytes) -> None:
        """Send one record; the caller holds :attr:`lock` (the ResponseHandler does)."""
        # Runs once per streamed record: _ensure_started() and ex.body() are inlined to spare
        # two coroutine frames per record.
        if not self.ex.started:
            await self.ex.start(self.status, self.content_type, self.extra)
        await self.ex.send({"type": "http.response.body", "body": data, "more_body": True})
        self.count += 1

    async def send(self, data: bytes) -> None:
        """Send one record, taking the lock."""
        async with self.lock:
            await self.write(data)

    async def beat(self) -> None:
        """Send a heartbeat comment."""
        async with self.lock:
            await self._ensure_started()
            await self.ex.body(protocol.HEARTBEAT)

    async def end(self) -> None:
        """Finish the body."""
        async with self.lock:
            await self._ensure_started()
            await self.ex.body(b"", more=False)


# ----------------------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class RuntimeState:
    """Everything a request needs from the config, swapped whole on reload."""

    config: RuntimeConfig
    auth: Authenticator
    agent: AbstractAgent
    sessions: SessionStore
    heartbeat: float
    shutdown_grace: float


def load_agent_class(path: str | None) -> type[AbstractAgent]:
    """The agent class named ``module:Class`` (the built-in chat agent when None)."""
    if not path:
        from agent_runtime.agents.chat import ChatAgent

        return ChatAgent
    module_name, _, class_name = path.partition(":")
    if not module_name or not class_name:
        raise ValueError(f"agent_class {path!r} must be 'module:Class'")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, AbstractAgent):
        raise ValueError(f"agent_class {path!r} is not a subclass of agent_runtime.sdk.AbstractAgent")
    return cls


class AgentRuntime:
    """The ASGI application of one agent pod."""

    def __init__(
        self,
        config: RuntimeConfig,
        credentials: CredentialFiles,
        *,
        config_path: Path | None = None,
        audit: AuditLog | None = None,
        watch_interval: float = DEFAULT_WATCH_INTERVAL,
    ) -> None:
        self.credentials = credentials
        self.config_path = config_path
        self.watch_interval = watch_interval
        self.audit = audit
        self._initial_config = config
        self._state: RuntimeState | None = None
        self.llm: Any = None
        self.limiter: Any = None
        self.gate: Any = None
        self._watcher: FileWatcher | None = None
        self._reload_lock = asyncio.Lock()
        self.draining = False
        self.started = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._agent_tasks: set[asyncio.Task[Any]] = set()
        self._forced: set[asyncio.Task[Any]] = set()
        self._retired: list[Callable[[], Awaitable[None]]] = []
        self._background: set[asyncio.Task[None]] = set()
        self.metrics_on_main_port = not config.server.metrics_port
        self._routes: dict[str, ASGIHandler] = {
            "/assist": self._assist,
            "/v1/chat/completions": self._chat_completions,
            "/v1/models": self._models,
        }
        routes = [
            Route("/live", self._live, methods=["GET"]),
            Route("/ready", self._ready, methods=["GET"]),
            Route("/health", self._health, methods=["GET"]),
            Route("/info", self._info, methods=["GET"]),
        ]
        if self.metrics_on_main_port:
            routes.append(Route("/metrics", metrics_endpoint, methods=["GET"]))
        self._starlette = Starlette(routes=routes, lifespan=self._lifespan)

    # ------------------------------------------------------------------ lifecycle

    @property
    def state(self) -> RuntimeState:
        """The config snapshot in force."""
        if self._state is None:
            raise RuntimeError("the runtime is not started")
        return self._state

    @property
    def config(self) -> RuntimeConfig:
        """The config in force."""
        return self._state.config if self._state is not None else self._initial_config

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        await self.startup()
        try:
            yield
        finally:
            await self.shutdown()

    async def startup(self) -> None:
        """Build the LLM manager, limiter, session store and agent; start watching files."""
        if self.started:
            return
        config = self._initial_config
        if self.audit is None:
            self.audit = open_audit_log(self._read_audit_key(config), None)
        # Always built (even without provider quotas) so that a reload can add some.
        self.gate = build_provider_gate(config.llm, config.rate_limit, self.credentials.read)
        self.llm = LLMManager(config.llm, self.credentials.read, self.gate)
        self.limiter = build_limiter(config.rate_limit, self.credentials.read, agent=config.agent.name)
        self._swap(self._build_state(config, previous=None))
        self.started = True
        if self.config_path is not None:
            self._watcher = FileWatcher(
                self.config_path,
                self.credentials,
                self._on_config_change,
                self._on_credentials_change,
                interval=self.watch_interval,
            )
            self._watcher.start()
        self.audit.record("runtime.start", agent=config.agent.name, namespace=config.agent.namespace)
        log.info("agent runtime started", extra={"agent": config.agent.name, "chain": len(config.llm.chain)})

    def _read_audit_key(self, config: RuntimeConfig) -> str | None:
        return self.credentials.read(config.audit_key_file) if config.audit_key_file else None

    def _build_state(
        self, config: RuntimeConfig, previous: RuntimeState | None, sessions: SessionStore | None = None
    ) -> RuntimeState:
        auth = Authenticator(config.auth, self.credentials.read)
        if previous is not None:
            auth.reuse_jwks_from(previous.auth)
        if sessions is None:
            if previous is not None and previous.config.sessions == config.sessions:
                sessions = previous.sessions
            else:
                sessions = build_session_store(config.sessions, self.credentials.read, config.agent.name)
        # A new agent per snapshot: the agent of an in-flight request keeps the
        # config that request started with, so nothing it reads changes under it.
        cls = load_agent_class(config.agent.agent_class)
        agent = cls.from_context(AgentContext(config=config, llm=self.llm, sessions=sessions))
        return RuntimeState(
            config=config,
            auth=auth,
            agent=agent,
            sessions=sessions,
            heartbeat=duration_seconds(config.server.heartbeat_interval),
            shutdown_grace=duration_seconds(config.server.shutdown_grace),
        )

    def _swap(self, state: RuntimeState) -> None:
        """Make ``state`` current; what it replaces is closed once no request can use it."""
        previous = self._state
        self._state = state
        if previous is None:
            return
        if previous.agent is not state.agent:
            self._retired.append(previous.agent.aclose)
        if previous.sessions is not state.sessions:
            self._retired.append(previous.sessions.aclose)
        if self.in_flight == 0:
            self._close_retired()

    def _close_retired(self) -> None:
        closers, self._retired = self._retired, []
        for closer in closers:
            task = asyncio.get_running_loop().create_task(_close_quietly(closer()))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def apply_config(self, config: RuntimeConfig) -> None:
        """Swap in a new config; the running requests keep the snapshot they started with."""
        async with self._reload_lock:
            previous = self.state
            if previous.config == config:
                return
            state = self._build_state(config, previous)
            # The limiter goes first (its reload may wait on I/O); then the chain and
            # the snapshot change with no suspension point between them, so a request
            # starting now sees the old chain and snapshot or the new ones.
            if previous.config.rate_limit != config.rate_limit:
                await self.limiter.reload(config.rate_limit, self.credentials.read)
            if previous.config.llm != config.llm:
                self.gate.reload(provider_limits(config.llm))
                self.llm.reload(config.llm)
            self._swap(state)

    async def _on_config_change(self) -> None:
        assert self.config_path is not None and self.audit is not None
        try:
            config = load_config(self.config_path)
            await self.apply_config(config)
        except Exception as exc:
            metrics.CONFIG_RELOADS.labels(kind="config", result="error").inc()
            # The message of a validation error names fields, never secret values (there are none in config).
            self.audit.record("config.reload_failed", error=type(exc).__name__)
            log.error("config reload failed; keeping the previous config: %s", exc)
            return
        metrics.CONFIG_RELOADS.labels(kind="config", result="ok").inc()
        self.audit.record("config.reload", agent=config.agent.name)
        log.info("config reloaded")

    async def _on_credentials_change(self) -> None:
        assert self.audit is not None
        try:
            state = self.state
            # Redis URLs are read when a backend is built; a changed URL needs a rebuild.
            if state.config.rate_limit is not None and state.config.rate_limit.backend.type == "redis":
                await self.limiter.reload(state.config.rate_limit, self.credentials.read)
            sessions_config = state.config.sessions
            if sessions_config.store == "redis" and sessions_config.redis_url_file:
                url = self.credentials.read(sessions_config.redis_url_file)
                if url != getattr(state.sessions, "url", None):
                    async with self._reload_lock:
                        current = self.state
                        sessions = build_session_store(
                            current.config.sessions, self.credentials.read, current.config.agent.name
                        )
                        self._swap(self._build_state(current.config, current, sessions))
        except Exception as exc:
            metrics.CONFIG_RELOADS.labels(kind="credentials", result="error").inc()
            self.audit.record("credentials.reload_failed", error=type(exc).__name__)
            log.error("credentials reload failed: %s", type(exc).__name__)
            return
        metrics.CONFIG_RELOADS.labels(kind="credentials", result="ok").inc()
        files = sorted(p.name for p in self.credentials.directory.iterdir() if not p.name.startswith("."))
        self.audit.record("credentials.reload", files=files, generation=self.credentials.generation)
        log.info("credentials reloaded", extra={"generation": self.credentials.generation})

    def begin_drain(self) -> None:
        """SIGTERM: readiness turns false and new requests get 503."""
        if not self.draining:
            self.draining = True
            log.info("draining: readiness false, new requests refused", extra={"in_flight": self.in_flight})
            if self.audit is not None:
                self.audit.record("runtime.drain", in_flight=self.in_flight)

    async def drain(self, grace: float | None = None) -> bool:
        """Wait for in-flight requests; at the deadline end them with ``error`` + ``done``.

        Returns True when every request finished by itself.
        """
        self.begin_drain()
        grace = self.state.shutdown_grace if grace is None else grace
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=max(0.0, grace))
            return True
        except TimeoutError:
            pass
        log.warning("shutdown grace expired; ending %d streams", len(self._agent_tasks))
        for task in list(self._agent_tasks):
            self._forced.add(task)
            task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=2.0)
        return False

    async def shutdown(self) -> None:
        """Stop watching, close agent, sessions, limiter and upstream clients."""
        if not self.started:
            return
        self.started = False
        if self._watcher is not None:
            await self._watcher.stop()
        state = self._state
        for closer in self._retired:
            await _close_quietly(closer())
        self._retired = []
        if state is not None:
            await _close_quietly(state.agent.aclose())
            await _close_quietly(state.sessions.aclose())
        if self.limiter is not None:
            await _close_quietly(self.limiter.aclose())
        if self.llm is not None:
            await _close_quietly(self.llm.aclose())
        if self.gate is not None:
            await _close_quietly(self.gate.aclose())
        if self.audit is not None:
            self.audit.record("runtime.stop")

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] == "http":
            handler = self._routes.get(scope["path"])
            if handler is not None:
                await handler(scope, receive, send)
                return
        await self._starlette(scope, receive, send)

    def _enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()
        metrics.IN_FLIGHT.inc()

    def _leave(self) -> None:
        self.in_flight -= 1
        metrics.IN_FLIGHT.dec()
        if self.in_flight == 0:
            self._idle.set()
            if self._retired:
                self._close_retired()

    async def _authenticate(self, ex: Exchange, state: RuntimeState) -> Principal:
        """The one authentication path of every route: refusals are counted and audited here."""
        try:
            if ex.repeated_credentials:
                raise AuthError(401, "duplicate_credentials", "more than one credential header")
            return await state.auth.authenticate(ex.headers)
        except AuthError as exc:
            metrics.AUTH_FAILURES.labels(reason=exc.reason).inc()
            if self.audit is not None:
                self.audit.record(
                    "auth.failure",
                    reason=exc.reason,
                    status=exc.status,
                    route=ex.route,
                    request_id=ex.request_id,
                    client=_client_address(ex.scope),
                )
            raise

    async def _assist(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex = Exchange(scope, receive, send, "/assist")
        token = REQUEST_ID.set(ex.request_id)
        self._enter()
        try:
            await self._guarded(ex, self._assist_inner, _assist_internal_error)
        finally:
            self._leave()
            ex.finish()
            REQUEST_ID.reset(token)

    async def _assist_inner(self, ex: Exchange) -> None:
        state = self.state if self._state is not None else None
        source = state.config.agent.name if state is not None else "agent"
        if ex.scope["method"] != "POST":
            await ex.sse_error(405, source, "method not allowed; use POST", extra={"allow": "POST"})
            return
        if self.draining or state is None:
            await ex.sse_error(503, source, "the agent is shutting down", close=True)
            return
        try:
            principal = await self._authenticate(ex, state)
        except AuthError as exc:
            await ex.sse_error(exc.status, source, exc.message, {"reason": exc.reason})
            return
        try:
            body = AssistBody.model_validate_json(await read_body(ex.receive))
        except BodyTooLarge:
            await ex.sse_error(413, source, f"request body larger than {MAX_BODY_BYTES} bytes")
            return
        except ClientGone:
            ex.status = STATUS_CLIENT_CLOSED
            return
        except ValidationError as exc:
            await ex.sse_error(422, source, validation_message(exc))
            return
        session_body = body.session or SessionBody()
        processor_id = session_body.processor_id or state.config.agent.name
        activity_id = session_body.activity_id or protocol.new_ulid()
        # The caller's own sessions only: another principal's activity id names a fresh session.
        owned = OwnedSessions(state.sessions, principal.kind, principal.id)
        session = Session(
            processor_id=processor_id,
            activity_id=activity_id,
            request_id=session_body.request_id or ex.request_id,
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
        query = Query(id=body.query.id, prompt=body.query.prompt)

        def estimate() -> int:
            # What the built-in agent will send; custom agents settle with what they report.
            messages = [{"content": state.config.agent.system_prompt}, {"content": body.query.prompt}]
            messages.extend({"content": t.content} for t in session.turns())
            return estimate_tokens(messages, state.config.llm.parameters.max_tokens)

        admission = await self._admit(ex, principal, session_body.activity_id, estimate)
        if not admission.allowed:
            await ex.sse_error(
                admission.status,
                processor_id,
                "rate limit exceeded" if admission.status == 429 else "rate limiter unavailable",
                {"limit": admission.limit, "retry_after": admission.retry_after},
                extra=admission.headers,
            )
            return
        handler: ResponseHandler | None = None
        try:
            handler = await self._run_agent(ex, state, session, query, processor_id, admission.headers)
        finally:
            usage = None
            if handler is not None and handler.input_tokens is not None:
                usage = (handler.input_tokens or 0) + (handler.output_tokens or 0)
            await admission.settle(usage)

    async def _admit(
        self, ex: Exchange, principal: Principal, session_id: str | None, estimate: Callable[[], int]
    ) -> Admission:
        """Rate-limit admission; the token estimate is computed only when a policy applies."""
        limiter = self.limiter
        if limiter is None or not limiter.enabled:
            return ALLOW_ALL
        subject = limiter.subject(principal, session_id)
        admission = await limiter.admit(subject, estimate())
        if not admission.allowed:
            metrics.RATE_LIMIT_REJECTIONS.labels(limit=admission.limit or "unknown", scope=subject.kind).inc()
            if self.audit is not None:
                self.audit.record(
                    "ratelimit.reject",
                    limit=admission.limit,
                    status=admission.status,
                    subject=subject.kind,
                    principal=principal.id,
                    route=ex.route,
                    request_id=ex.request_id,
                )
        return admission

    async def _run_agent(
        self,
        ex: Exchange,
        state: RuntimeState,
        session: Session,
        query: Query,
        source: str,
        extra_headers: Mapping[str, str],
    ) -> ResponseHandler:
        pulse = Pulse(ex, extra_headers)
        handler = ResponseHandler(Identity(source, state.config.agent.name), pulse.write, lock=pulse.lock)
        agent_task = asyncio.get_running_loop().create_task(state.agent.assist(session, query, handler))
        self._agent_tasks.add(agent_task)
        disconnected = await self._supervise(ex, agent_task, pulse, state.heartbeat)
        self._agent_tasks.discard(agent_task)
        forced = agent_task in self._forced
        self._forced.discard(agent_task)
        if disconnected:
            ex.status = STATUS_CLIENT_CLOSED
            metrics.CLIENT_DISCONNECTS.labels(route=ex.route).inc()
            log.info("client disconnected; agent cancelled")
            return handler
        error = _task_error(agent_task)
        try:
            if forced:
                if not handler.is_complete:
                    await handler.close_streams()
                    await handler.emit_error("the agent is shutting down", 503)
                    count_agent_error(ex.route, 503)
            elif error is not None:
                code = getattr(error, "status", getattr(error, "code", 500))
                if not ex.started and isinstance(code, int) and 400 <= code <= 599:
                    # Nothing was sent yet: the HTTP status can still tell the failure too.
                    pulse.status = code
                await self._report_agent_error(handler, error)
                count_agent_error(ex.route, getattr(error, "status", getattr(error, "code", 500)))
            await handler.complete()
        except Exception:
            log.exception("could not finish the response")
        await pulse.end()
        return handler

    async def _report_agent_error(self, handler: ResponseHandler, error: BaseException) -> None:
        if handler.is_complete:
            log.error("agent raised after completing its response: %s", type(error).__name__)
            return
        await handler.close_streams()
        if isinstance(error, LLMError):
            details: dict[str, Any] = {}
            if error.retry_after is not None:
                details["retry_after"] = error.retry_after
            log.warning("LLM request failed: %s", error.message, extra={"status": error.status})
            await handler.emit_error(error.message, error.status, details or None)
        elif isinstance(error, AgentError):
            await handler.emit_error(error.message, error.code, error.details)
        else:
            log.error("agent failed", exc_info=error)
            await handler.emit_error("internal agent error", 500)

    async def _supervise(
        self,
        ex: Exchange,
        work: asyncio.Task[Any],
        pulse: Pulse | None = None,
        heartbeat: float = 0.0,
    ) -> bool:
        """Wait for ``work``, sending heartbeats on silence; cancel it when the client goes away.

        Returns True when the client disconnected.
        """
        watcher = asyncio.get_running_loop().create_task(_wait_disconnect(ex.receive))
        try:
            seen = pulse.count if pulse is not None else 0
            while True:
                done, _ = await asyncio.wait(
                    (work, watcher),
                    timeout=heartbeat if heartbeat > 0 and pulse is not None else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if work in done:
                    return False
                if watcher in done:
                    work.cancel()
                    with contextlib.suppress(BaseException):
                        await work
                    return True
                # A silent interval: an SSE comment keeps proxies and clients from timing out.
                if pulse is not None:
                    if pulse.count == seen:
                        await pulse.beat()
                    seen = pulse.count
        finally:
            if not watcher.done():
                watcher.cancel()

    async def _chat_completions(self, scope: Scope, receive: Receive, send: Send) -> None:
        from agent_runtime.openai_api import chat_completions

        ex = Exchange(scope, receive, send, "/v1/chat/completions")
        token = REQUEST_ID.set(ex.request_id)
        self._enter()
        try:
            await self._guarded(ex, lambda e: chat_completions(self, e), _openai_internal_error)
        finally:
            self._leave()
            ex.finish()
            REQUEST_ID.reset(token)

    # ------------------------------------------------------------------ simple routes

    async def _live(self, _request: Request) -> Response:
        _count("/live", 200, 0.0)
        return JSONResponse({"status": "alive"})

    def readiness(self) -> tuple[bool, str]:
        """Ready when started, not draining, and at least one provider is usable."""
        if self.draining:
            return False, "shutting down"
        if not self.started or self._state is None:
            return False, "not started"
        if self.llm is not None and not self.llm.usable():
            return False, "no usable provider"
        return True, "ready"

    async def _ready(self, _request: Request) -> Response:
        ready, reason = self.readiness()
        status = 200 if ready else 503
        _count("/ready", status, 0.0)
        return JSONResponse({"ready": ready, "reason": reason}, status_code=status)

    async def _health(self, _request: Request) -> Response:
        ready, reason = self.readiness()
        config = self.config
        limiter = self.limiter
        body = {
            "status": "ok" if ready else ("draining" if self.draining else "degraded"),
            "reason": reason,
            "agent": {"name": config.agent.name, "namespace": config.agent.namespace},
            "in_flight": self.in_flight,
            "providers": self.llm.snapshot() if self.llm is not None else [],
            "rate_limit": {
                "policy": config.rate_limit.policy if config.rate_limit else None,
                "degraded": bool(limiter is not None and limiter.degraded),
            },
            "sessions": {"store": config.sessions.store},
            "credentials_generation": self.credentials.generation,
        }
        _count("/health", 200, 0.0)
        return JSONResponse(body)

    async def _info(self, _request: Request) -> Response:
        agent = self.config.agent
        _count("/info", 200, 0.0)
        return JSONResponse(
            {
                "name": agent.name,
                "namespace": agent.namespace,
                "description": agent.description,
                "capabilities": agent.capabilities,
                "protocol": {"name": "sentient-agent", "schema_version": protocol.SCHEMA_VERSION},
                "endpoints": {
                    "assist": "/assist",
                    "chat_completions": "/v1/chat/completions",
                    "models": "/v1/models",
                },
            }
        )

    async def _models(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex = Exchange(scope, receive, send, "/v1/models")
        token = REQUEST_ID.set(ex.request_id)
        try:
            await self._guarded(ex, self._models_inner, _openai_internal_error)
        finally:
            ex.finish()
            REQUEST_ID.reset(token)

    async def _models_inner(self, ex: Exchange) -> None:
        from agent_runtime.openai_api import openai_error

        if ex.scope["method"] not in ("GET", "HEAD"):
            await ex.json(
                405, openai_error("method not allowed; use GET", "invalid_request_error"), {"allow": "GET"}
            )
            return
        if self._state is None:
            await ex.json(503, openai_error("the agent is not started", "service_unavailable"))
            return
        state = self.state
        try:
            await self._authenticate(ex, state)
        except AuthError as exc:
            await ex.json(exc.status, openai_error(exc.message, "authentication_error", exc.reason))
            return
        await ex.json(
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

    async def _guarded(
        self,
        ex: Exchange,
        inner: Callable[[Exchange], Awaitable[None]],
        on_error: Callable[[Exchange], Awaitable[None]],
    ) -> None:
        """Run a route; an unexpected exception is a logged 500, never a response recorded as 200."""
        try:
            await inner(ex)
        except Exception:
            log.exception("request failed")
            if not ex.started:
                await on_error(ex)
            ex.status = 500


async def _openai_internal_error(ex: Exchange) -> None:
    from agent_runtime.openai_api import openai_error

    await ex.json(500, openai_error("internal error", "api_error"))


async def _assist_internal_error(ex: Exchange) -> None:
    await ex.sse_error(500, "agent", "internal error")


_KNOWN_CODES = frozenset({400, 401, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503, 504})


def count_agent_error(route: str, code: object) -> None:
    """Count an error event; unusual codes share one label value so the label set stays bounded."""
    label = str(code) if code in _KNOWN_CODES else "other"
    metrics.AGENT_ERRORS.labels(route=route, code=label).inc()


def _task_error(task: asyncio.Task[Any]) -> BaseException | None:
    if task.cancelled():
        return asyncio.CancelledError()
    return task.exception()


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _close_quietly(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception:
        log.warning("error while closing", exc_info=True)


def _client_address(scope: Scope) -> str | None:
    client = scope.get("client")
    return f"{client[0]}" if client else None


async def metrics_endpoint(_request: Request) -> Response:
    """Prometheus exposition of the runtime's registry."""
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)


def metrics_app() -> Starlette:
    """The app served on the metrics port."""
    return Starlette(routes=[Route("/metrics", metrics_endpoint, methods=["GET"])])


def create_app(
    config: RuntimeConfig | None = None,
    *,
    config_path: Path | None = None,
    credentials_dir: Path | None = None,
    audit: AuditLog | None = None,
    watch_interval: float = DEFAULT_WATCH_INTERVAL,
) -> AgentRuntime:
    """Build the runtime from a config (or the file at ``config_path`` / ``SENTIENT_CONFIG``)."""
    from agent_runtime.config import config_path as default_config_path
    from agent_runtime.config import credentials_dir as default_credentials_dir

    path = config_path or (None if config is not None else default_config_path())
    if config is None:
        assert path is not None
        config = load_config(path)
    credentials = CredentialFiles(credentials_dir or default_credentials_dir())
    return AgentRuntime(config, credentials, config_path=path, audit=audit, watch_interval=watch_interval)
