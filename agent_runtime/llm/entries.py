"""The failover chain as the manager uses it: each entry resolved once per config, for the hot path.

A config (re)load builds a new immutable :class:`Snapshot`; circuit breakers,
last-outcome statistics and balancing load belong to a (provider, model) and
are carried over from the previous snapshot, so a reload neither closes an
open breaker nor forgets the last error shown on ``/health``.

Steps (``llm.steps``) group consecutive entries; a step of several members
orders them per request through its balancer (``balance.py``). When every step
has one member the snapshot has no steps and the chain is walked as a list.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from agent_runtime.config import LLMParameters, LLMRuntimeConfig, ProviderConfig, duration_seconds
from agent_runtime.llm.balance import Balancer, MemberLoad, make_balancer
from agent_runtime.llm.breaker import CircuitBreaker
from agent_runtime.llm.pool import PoolKey, origin_of
from agent_runtime.llm.providers import Adapter, adapter_for
from agent_runtime.metrics import BALANCE_PICKS

# RFC 9110: a field name is a token; a field value holds no control character but HTAB.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(slots=True, eq=False)
class Stats:
    """Last outcomes of one (provider, model), kept across reloads for /health."""

    last_error: str | None = None
    last_error_at: float | None = None
    last_success_at: float | None = None


@dataclass(slots=True, eq=False)
class Entry:
    """One chain entry with everything resolved for the hot path."""

    config: ProviderConfig
    adapter: Adapter
    pool_key: PoolKey
    breaker: CircuitBreaker
    url: httpx.URL
    timeout_ext: dict[str, float | None]
    first_token: float
    idle: float
    total: float
    max_attempts: int
    initial_backoff: float
    max_backoff: float
    retry_on: frozenset[str]
    stats: Stats
    params: LLMParameters
    label: dict[str, str]
    # Why this entry's configuration cannot be sent (never the offending value), or None.
    config_problem: str | None
    # (scheme, host, port) of ``url``: the connection pool's key for it.
    address: tuple[str, str, int]
    # Request heads built once per (streamed, API key) by llm/wire.py.
    heads: dict[tuple[bool, str | None], bytes] = field(default_factory=dict)
    # Metric children labelled with this entry (see :func:`meter`): labels() costs on every call.
    meters: dict[tuple[object, str], Any] = field(default_factory=dict)
    # In-flight attempts and latency, kept for members of a load-balanced step only (None otherwise:
    # a plain chain entry pays nothing for balancing).
    load: MemberLoad | None = None


@dataclass(slots=True, frozen=True, eq=False)
class Step:
    """A load-balanced step: its members and the balancer that orders them per request."""

    index: int
    entries: tuple[Entry, ...]
    balancer: Balancer
    # BALANCE_PICKS children, one per member.
    picks: tuple[Any, ...]

    def walk(self) -> list[Entry]:
        """The members in the order this request tries them (``balance.py``), the pick counted."""
        entries = self.entries
        order = self.balancer.order([e.breaker.available() for e in entries])
        if entries[order[0]].breaker.available():
            self.picks[order[0]].inc()
        return [entries[i] for i in order]


@dataclass(slots=True, frozen=True, eq=False)
class Snapshot:
    """An immutable view of the config in force; swapped whole on reload."""

    config: LLMRuntimeConfig
    entries: tuple[Entry, ...]
    total: float
    # Every step in order when at least one step has several members; None for a plain chain.
    steps: tuple[Step | Entry, ...] | None = None


def meter(entry: Entry, metric: Any, label: str = "", value: str = "") -> Any:
    """``metric``'s child for ``entry`` (and ``label=value`` when given), created once."""
    key = (metric, value)
    child = entry.meters.get(key)
    if child is None:
        labels = {label: value, **entry.label} if label else entry.label
        child = entry.meters[key] = metric.labels(**labels)
    return child


def header_problem(headers: Mapping[str, str]) -> str | None:
    """Why ``headers`` cannot be sent as HTTP header fields, without repeating them; or None."""
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            return "a defaultHeaders name is not a valid HTTP header name"
        if _HEADER_VALUE_FORBIDDEN.search(value):
            return "a defaultHeaders value holds a line break or another control character"
    return None


def build_snapshot(
    config: LLMRuntimeConfig,
    breakers: dict[tuple[str, str], CircuitBreaker],
    stats: dict[tuple[str, str], Stats],
    clock: Callable[[], float],
    loads: dict[tuple[str, str], MemberLoad] | None = None,
) -> Snapshot:
    """Resolve ``config``'s chain; ``breakers``, ``stats`` and ``loads`` are reused and filled in."""
    entries: list[Entry] = []
    for provider in config.chain:
        adapter = adapter_for(str(provider.type))
        url = adapter.url(provider.endpoint)
        timeouts, retry, cb = provider.timeouts, provider.retry, provider.circuit_breaker
        connect = duration_seconds(timeouts.connect)
        key = PoolKey(
            origin=origin_of(url),
            ca_file=provider.tls.ca_file,
            insecure=provider.tls.insecure_skip_verify,
            connect=connect,
        )
        ident = (provider.id, provider.model)
        breaker = breakers.get(ident)
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
                clock=clock,
            )
            breakers[ident] = breaker
        else:
            breaker.configure(
                failure_threshold=threshold, window=window, cooldown=cooldown, half_open_requests=trials
            )
        http_url = httpx.URL(url)
        port = http_url.port or (443 if http_url.scheme == "https" else 80)
        entries.append(
            Entry(
                config=provider,
                adapter=adapter,
                pool_key=key,
                breaker=breaker,
                url=http_url,
                timeout_ext={"connect": connect, "read": None, "write": connect, "pool": connect},
                first_token=duration_seconds(timeouts.first_token),
                idle=duration_seconds(timeouts.idle),
                total=duration_seconds(timeouts.total),
                max_attempts=retry.max_attempts,
                initial_backoff=duration_seconds(retry.initial_backoff),
                max_backoff=duration_seconds(retry.max_backoff),
                retry_on=frozenset(retry.retry_on),
                stats=stats.setdefault(ident, Stats()),
                params=config.parameters,
                label={"provider": provider.id, "model": provider.model},
                config_problem=header_problem(provider.default_headers),
                address=(http_url.scheme, http_url.host, port),
            )
        )
    steps = _steps(config, entries, {} if loads is None else loads, clock)
    return Snapshot(config=config, entries=tuple(entries), total=entries[0].total, steps=steps)


def _steps(
    config: LLMRuntimeConfig,
    entries: list[Entry],
    loads: dict[tuple[str, str], MemberLoad],
    clock: Callable[[], float],
) -> tuple[Step | Entry, ...] | None:
    """The chain as steps (a lone entry stands for itself), or None when no step balances."""
    if config.steps is None or all(step.size == 1 for step in config.steps):
        return None
    steps: list[Step | Entry] = []
    start = 0
    for index, step in enumerate(config.steps):
        members = entries[start : start + step.size]
        start += step.size
        if len(members) == 1:
            steps.append(members[0])
            continue
        half_life = duration_seconds(step.latency_half_life)
        for entry in members:
            ident = (entry.config.id, entry.config.model)
            load = loads.get(ident)
            if load is None:
                load = loads[ident] = MemberLoad(entry.config.id, entry.config.model)
            load.half_life = half_life
            entry.load = load
        balancer = make_balancer(
            step.strategy,
            [e.load for e in members if e.load is not None],
            [e.config.weight or 1 for e in members],
            probe_interval=duration_seconds(step.probe_interval),
            clock=clock,
        )
        picks = tuple(
            BALANCE_PICKS.labels(step=str(index), provider=e.config.id, model=e.config.model) for e in members
        )
        steps.append(Step(index=index, entries=tuple(members), balancer=balancer, picks=picks))
    return tuple(steps)
