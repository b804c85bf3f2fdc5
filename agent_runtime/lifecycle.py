"""The runtime's lifecycle: start, hot reload, drain and stop, and the tracking of in-flight work.

Every request works on one immutable :class:`RuntimeState` snapshot taken when
it starts, so a config reload applies to the next request and never half-way
through one. What a reload replaces (agent, session store) is closed once no
request can still use it. On SIGTERM readiness turns false, new requests are
refused, and in-flight work gets ``shutdownGrace`` to finish before it is
cancelled.

Public interface used by the pipeline and the routes: :attr:`Lifecycle.state`,
:meth:`~Lifecycle.enter` / :meth:`~Lifecycle.leave` (in-flight requests),
:meth:`~Lifecycle.track` / :meth:`~Lifecycle.untrack` (work a drain may cancel),
:meth:`~Lifecycle.readiness`, :attr:`~Lifecycle.accepting`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_runtime import metrics
from agent_runtime.audit import AuditLog, open_audit_log
from agent_runtime.audit.sinks import SinkSet
from agent_runtime.auth import Authenticator
from agent_runtime.busy_poll import BusyPoll, Kick
from agent_runtime.cache import CachingLLM, ResponseCache, build_cache, config_fingerprint
from agent_runtime.config import RuntimeConfig, duration_seconds, load_config
from agent_runtime.guardrails.engine import Guardrails
from agent_runtime.guardrails.redaction import Redactor, configure_log_redaction
from agent_runtime.limits.policy import build_limiter
from agent_runtime.limits.provider_gate import build_provider_gate, provider_limits
from agent_runtime.llm import LLMManager
from agent_runtime.redis_connection import try_resolve_target
from agent_runtime.reload import DEFAULT_WATCH_INTERVAL, CredentialFiles, FileWatcher
from agent_runtime.sdk import AbstractAgent, AgentContext
from agent_runtime.sessions import SessionStore, build_session_store, start_sessions
from agent_runtime.tracing import Tracing, build_tracing

log = logging.getLogger("agent_runtime.lifecycle")

# The end of the shutdown grace kept to end forced requests and send their last bytes.
DRAIN_RESERVE_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class RuntimeState:
    """Everything a request needs from the config, swapped whole on reload."""

    config: RuntimeConfig
    auth: Authenticator
    agent: AbstractAgent
    sessions: SessionStore
    heartbeat: float
    shutdown_grace: float
    # Input and output checks; None when the config has none (the pipeline then skips them).
    guardrails: Guardrails | None = None
    # The response cache; None when the agent has none.
    cache: ResponseCache | None = None
    # The chain as requests call it: the LLM manager, behind the response cache when there is one.
    llm: Any = None
    # OpenTelemetry tracer; None when tracing is off.
    tracing: Tracing | None = None


def load_agent_class(path: str | None) -> type[AbstractAgent]:
    """The agent class named ``module:Class`` (the built-in chat agent when None)."""
    if not path:
        from agent_runtime.agents.chat import ChatAgent

        return ChatAgent
    module_name, _, class_name = path.partition(":")
    if not module_name or not class_name:
        raise ValueError(f"agent_class {path!r} must be 'module:Class'")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if isinstance(cls, type) and not issubclass(cls, AbstractAgent):
        # A Sentient Agent Framework agent runs unchanged, through the framework's interfaces.
        from agent_runtime.agents.framework import adapt

        adapted = adapt(cls)
        if adapted is not None:
            return adapted
    if not isinstance(cls, type) or not issubclass(cls, AbstractAgent):
        raise ValueError(
            f"agent_class {path!r} is not a subclass of agent_runtime.sdk.AbstractAgent "
            "(or of sentient_agent_framework.AbstractAgent)"
        )
    return cls


class Lifecycle:
    """Start, reload, drain and stop one runtime; count and track what is in flight."""

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
        # The audit log's SIEM sinks (config.audit); built at startup.
        self.audit_sinks: SinkSet | None = None
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
        self.busy_poll = BusyPoll(duration_seconds(config.server.busy_poll))
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._forced: set[asyncio.Task[Any]] = set()
        self._retired: list[Callable[[], Awaitable[None]]] = []
        self._background: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> RuntimeState:
        """The config snapshot in force."""
        if self._state is None:
            raise RuntimeError("the runtime is not started")
        return self._state

    @property
    def current(self) -> RuntimeState | None:
        """The config snapshot in force, or None before the start."""
        return self._state

    @property
    def config(self) -> RuntimeConfig:
        """The config in force."""
        return self._state.config if self._state is not None else self._initial_config

    @property
    def tracing(self) -> Tracing | None:
        """The tracer in force (None when tracing is off or before the start)."""
        return self._state.tracing if self._state is not None else None

    @property
    def accepting(self) -> bool:
        """Whether new work is accepted (started and not draining)."""
        return self._state is not None and self.started and not self.draining

    def readiness(self) -> tuple[bool, str]:
        """Ready when started, not draining, and at least one provider is usable."""
        if self.draining:
            return False, "shutting down"
        if not self.started or self._state is None:
            return False, "not started"
        if self.llm is not None and not self.llm.usable():
            return False, "no usable provider"
        return True, "ready"

    # ------------------------------------------------------------------ in-flight work

    def enter(self) -> None:
        """A request starts."""
        self.in_flight += 1
        self._idle.clear()
        metrics.IN_FLIGHT.inc()
        self.busy_poll.kick(Kick.START, self.in_flight)

    def leave(self) -> None:
        """A request ends; retired components are closed once nothing is in flight."""
        self.in_flight -= 1
        metrics.IN_FLIGHT.dec()
        if self.in_flight == 0:
            self._idle.set()
            if self._retired:
                self._close_retired()
        self.busy_poll.kick(Kick.END, self.in_flight)

    def track(self, task: asyncio.Task[Any]) -> None:
        """Work of a request that a drain may end at its deadline."""
        self._tasks.add(task)

    def untrack(self, task: asyncio.Task[Any]) -> bool:
        """Stop tracking ``task``; True when the drain cancelled it (the agent is shutting down)."""
        self._tasks.discard(task)
        forced = task in self._forced
        self._forced.discard(task)
        return forced

    # ------------------------------------------------------------------ start and stop

    async def startup(self) -> None:
        """Build the LLM manager, limiter, session store and agent; start watching files."""
        if self.started:
            return
        config = self._initial_config
        if self.audit is None:
            self.audit = open_audit_log(self._read_audit_key(config), None)
        self.audit_sinks = SinkSet(self.audit)
        self.audit_sinks.apply(config.audit, self.credentials.read)
        # Always built (even without provider quotas) so that a reload can add some.
        self.gate = build_provider_gate(config.llm, config.rate_limit, self.credentials.read)
        self.llm = LLMManager(config.llm, self.credentials.read, self.gate)
        self.limiter = build_limiter(config.rate_limit, self.credentials.read, agent=config.agent.name)
        self._swap(self._build_state(config, previous=None))
        await start_sessions(self.state.sessions)
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

    def begin_drain(self) -> None:
        """SIGTERM: readiness turns false and new requests get 503."""
        if not self.draining:
            self.draining = True
            log.info("draining: readiness false, new requests refused", extra={"in_flight": self.in_flight})
            if self.audit is not None:
                self.audit.record("runtime.drain", in_flight=self.in_flight)

    async def drain(self, grace: float | None = None) -> bool:
        """Wait for in-flight requests; before the deadline end them with ``error`` + ``done``.

        The whole drain fits inside ``grace``: a part of it (at most 1 s) is kept to end what is
        still running (streams, agents, slow uploads) and let those responses go out, so the process
        exits within the grace it announced. Returns True when every request finished by itself.
        """
        self.begin_drain()
        grace = max(0.0, self.state.shutdown_grace if grace is None else grace)
        reserve = min(DRAIN_RESERVE_SECONDS, grace * 0.2)
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=grace - reserve)
            return True
        except TimeoutError:
            pass
        log.warning("shutdown grace expiring; ending %d requests", len(self._tasks))
        for task in list(self._tasks):
            self._forced.add(task)
            task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=reserve)
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
            if state.guardrails is not None:
                await _close_quietly(state.guardrails.aclose())
            if state.cache is not None:
                await _close_quietly(state.cache.aclose())
            if state.auth.oidc is not None:
                await _close_quietly(state.auth.oidc.aclose())
            if state.tracing is not None:
                await _close_quietly(state.tracing.aclose())
        if self.limiter is not None:
            await _close_quietly(self.limiter.aclose())
        if self.llm is not None:
            await _close_quietly(self.llm.aclose())
        if self.gate is not None:
            await _close_quietly(self.gate.aclose())
        if self.audit is not None:
            self.audit.record("runtime.stop")
        if self.audit_sinks is not None:
            # The last records (runtime.stop included) get a few seconds to ship; the rest stays spooled.
            await asyncio.to_thread(self.audit_sinks.close)

    # ------------------------------------------------------------------ reload

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
        cache = self._build_cache(config, previous)
        llm = CachingLLM(self.llm, config_fingerprint(config)) if cache is not None else self.llm
        agent = cls.from_context(AgentContext(config=config, llm=llm, sessions=sessions))
        guardrails = self._build_guardrails(config, previous)
        tracing = self._build_tracing(config, previous)
        return RuntimeState(
            config=config,
            auth=auth,
            agent=agent,
            sessions=sessions,
            heartbeat=duration_seconds(config.server.heartbeat_interval),
            shutdown_grace=duration_seconds(config.server.shutdown_grace),
            guardrails=guardrails,
            cache=cache,
            llm=llm,
            tracing=tracing,
        )

    def _build_cache(
        self, config: RuntimeConfig, previous: RuntimeState | None, *, rebuild: bool = False
    ) -> ResponseCache | None:
        """The response cache of ``config``, kept from ``previous`` (entries and all) when unchanged."""
        if (
            not rebuild
            and previous is not None
            and previous.cache is not None
            and previous.config.cache == config.cache
        ):
            return previous.cache
        return build_cache(config.cache, self.credentials.read)

    def _build_tracing(self, config: RuntimeConfig, previous: RuntimeState | None) -> Tracing | None:
        """The tracer of ``config``; kept from ``previous`` when its config and header file are unchanged."""
        wanted = config.tracing
        if wanted is None:
            return None
        if (
            previous is not None
            and previous.tracing is not None
            and previous.config.tracing == wanted
            and previous.config.agent == config.agent
            and (
                wanted.headers_file is None
                or self.credentials.read(wanted.headers_file) == previous.tracing.headers_text
            )
        ):
            return previous.tracing
        return build_tracing(wanted, config.agent, self.credentials.read)

    def _build_guardrails(self, config: RuntimeConfig, previous: RuntimeState | None) -> Guardrails | None:
        """The checks of ``config`` (kept from ``previous`` when unchanged); sets log and audit masking."""
        wanted = config.guardrails
        redaction = wanted.redact if wanted is not None else None
        configure_log_redaction(redaction.entities if redaction is not None and redaction.logs else None)
        if self.audit is not None:
            audit_on = redaction is not None and redaction.audit
            self.audit.redactor = Redactor(redaction.entities) if audit_on and redaction else None
        if wanted is None or not (wanted.input or wanted.output):
            return None
        if previous is not None and previous.guardrails is not None and previous.config.guardrails == wanted:
            return previous.guardrails
        return Guardrails(wanted, self.credentials.read, self.audit)

    def _swap(self, state: RuntimeState) -> None:
        """Make ``state`` current; what it replaces is closed once no request can use it."""
        previous = self._state
        self._state = state
        self.busy_poll.budget = duration_seconds(state.config.server.busy_poll)
        if not self.busy_poll.budget:
            self.busy_poll.stop()
        if previous is None:
            return
        if previous.agent is not state.agent:
            self._retired.append(previous.agent.aclose)
        if previous.sessions is not state.sessions:
            self._retired.append(previous.sessions.aclose)
        if previous.guardrails is not None and previous.guardrails is not state.guardrails:
            self._retired.append(previous.guardrails.aclose)
        if previous.cache is not None and previous.cache is not state.cache:
            self._retired.append(previous.cache.aclose)
        if previous.auth.oidc is not None and previous.auth.oidc is not state.auth.oidc:
            self._retired.append(previous.auth.oidc.aclose)
        if previous.tracing is not None and previous.tracing is not state.tracing:
            self._retired.append(previous.tracing.aclose)
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
            if previous.config.audit != config.audit and self.audit_sinks is not None:
                await asyncio.to_thread(self.audit_sinks.apply, config.audit, self.credentials.read)

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

    def _sessions_source_changed(self, state: RuntimeState) -> bool:
        """Whether the mounted Redis URL or PostgreSQL DSN of the sessions differs from the store's."""
        sessions_config = state.config.sessions
        connection = sessions_config.connection()
        if sessions_config.store == "redis" and connection is not None:
            target = try_resolve_target(connection, self.credentials.read)
            return target != getattr(state.sessions, "target", None)
        if sessions_config.store == "postgres" and sessions_config.postgres is not None:
            dsn = (self.credentials.read(sessions_config.postgres.dsn_file) or "").strip()
            return dsn != getattr(state.sessions, "dsn", None)
        return False

    async def _reconnect_cache(self) -> None:
        """A Redis cache whose files changed (URL, password, CA) gets a new client."""
        state = self.state
        cache_config = state.config.cache
        if cache_config is None or cache_config.redis is None or state.cache is None:
            return
        if try_resolve_target(cache_config.redis, self.credentials.read) == state.cache.target:
            return
        async with self._reload_lock:
            current = self.state
            cache = self._build_cache(current.config, current, rebuild=True)
            self._swap(dataclasses.replace(current, cache=cache))

    async def _on_credentials_change(self) -> None:
        assert self.audit is not None
        try:
            if self.llm is not None:
                # A new provider key closes that provider's breaker now, not after its cool-down.
                self.llm.credentials_changed()
            state = self.state
            # Redis URLs are read when a backend is built; a changed URL needs a rebuild.
            if state.config.rate_limit is not None and state.config.rate_limit.backend.type == "redis":
                await self.limiter.reload(state.config.rate_limit, self.credentials.read)
            tracing_config = state.config.tracing
            if tracing_config is not None and tracing_config.headers_file is not None:
                # A rotated header Secret (collector token): a new exporter for the next request.
                text = self.credentials.read(tracing_config.headers_file)
                if state.tracing is None or text != state.tracing.headers_text:
                    async with self._reload_lock:
                        current = self.state
                        self._swap(self._build_state(current.config, current, current.sessions))
                        state = self.state
            if state.config.audit is not None and self.audit_sinks is not None:
                # A rotated sink token or CA: new transports, same spools.
                await asyncio.to_thread(
                    self.audit_sinks.apply, state.config.audit, self.credentials.read, force=True
                )
            if self._sessions_source_changed(state):
                async with self._reload_lock:
                    current = self.state
                    sessions = build_session_store(
                        current.config.sessions, self.credentials.read, current.config.agent.name
                    )
                    self._swap(self._build_state(current.config, current, sessions))
            await self._reconnect_cache()
        except Exception as exc:
            metrics.CONFIG_RELOADS.labels(kind="credentials", result="error").inc()
            self.audit.record("credentials.reload_failed", error=type(exc).__name__)
            log.error("credentials reload failed: %s", type(exc).__name__)
            return
        metrics.CONFIG_RELOADS.labels(kind="credentials", result="ok").inc()
        files = sorted(p.name for p in self.credentials.directory.iterdir() if not p.name.startswith("."))
        self.audit.record("credentials.reload", files=files, generation=self.credentials.generation)
        log.info("credentials reloaded", extra={"generation": self.credentials.generation})


async def _close_quietly(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception:
        log.warning("error while closing", exc_info=True)
