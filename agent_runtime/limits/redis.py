"""Redis limiter backend: one atomic script round trip per admission, shared by every replica.

``ratelimit_admit.lua`` checks and charges requests, burst, tokens and the
concurrency slot together; a settle (refund and free) rides with the next
admission's script on the pipelined connection (applied first, atomically), or
runs ``ratelimit_settle.lua`` on its own when no admission comes within
``SETTLE_DEFER``. Scripts run by EVALSHA and are loaded again on NOSCRIPT (after
a Redis restart or SCRIPT FLUSH). Time comes from Redis ``TIME`` so replicas
with skewed clocks still share one timeline; tests pass the time explicitly.

``ResilientRedisBackend`` adds the ``onRedisUnavailable`` behaviour: failOpen
falls back to a local in-memory limiter, failClosed refuses with 503; either
way ``sentient_rate_limit_backend_degraded`` is 1 until Redis answers again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from redis import exceptions as redis_errors
from redis.asyncio import ConnectionPool, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisClusterException, RedisError, ResponseError

from agent_runtime.limits.base import (
    DEFAULT_LEASE_US,
    US_PER_S,
    Backend,
    Decision,
    LimitSpec,
    Refusal,
)
from agent_runtime.limits.memory import MemoryBackend
from agent_runtime.limits.resp import LeanConnection, lean_address
from agent_runtime.metrics import RATE_LIMIT_BACKEND_DEGRADED
from agent_runtime.redis_connection import ClusterStart, MasterWatch, RedisTarget

log = logging.getLogger(__name__)

_SCRIPTS = resources.files("agent_runtime.limits")
# Both scripts start with the settle functions: an admission applies the settles riding with it.
_SETTLES_LUA = _SCRIPTS.joinpath("ratelimit_settles.lua").read_text()
ADMIT_LUA = _SETTLES_LUA + _SCRIPTS.joinpath("ratelimit_admit.lua").read_text()
SETTLE_LUA = _SETTLES_LUA + _SCRIPTS.joinpath("ratelimit_settle.lua").read_text()

# Errors that mean "Redis cannot answer now" (down, restarting, loading, overloaded, timed out;
# for a Cluster also "no node reachable" and "slot not covered", which are not RedisErrors).
UNAVAILABLE = (RedisError, RedisClusterException, OSError, asyncio.TimeoutError)
# Longest a settle waits (lean connection, other commands in flight) to ride with the next
# admission's script: this process's next admission applies it first anyway, so only other
# replicas can see a slot freed this late.
SETTLE_DEFER = 0.001
# Refusal codes of the admission script, by code.
_REFUSALS = tuple(Refusal)


def _sha(source: str) -> str:
    return hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


def window_keys(key: str) -> list[str]:
    """The four keys of one subject: request window, burst TAT, token window, concurrency leases."""
    return [f"{key}:r", f"{key}:b", f"{key}:t", f"{key}:c"]


def admit_arg(spec: LimitSpec, tokens: int, now_us: int | None, lease_us: int) -> str:
    """The numbers of one admission as the script takes them (``ratelimit_admit.lua`` ARGV[1])."""
    burst = spec.burst if spec.burst is not None and spec.requests_per_minute is not None else 0
    return (
        f"{spec.requests_per_minute or 0} {spec.tokens_per_minute or 0} {burst} {spec.concurrency or 0} "
        f"{max(0, tokens)} {'-' if now_us is None else now_us} {lease_us}"
    )


def settle_arg(
    request_id: str, bucket: int, token_refund: int, track_tokens: bool, now_us: int | None
) -> str:
    """One settle as the scripts take it (``ratelimit_settles.lua``): five fields, spaces between."""
    return (
        f"{request_id} {bucket} {token_refund} {1 if track_tokens else 0} {'-' if now_us is None else now_us}"
    )


# A settle's arguments, as Backend.settle takes them (kept to report or replay a lost settle).
SettleItem = tuple[str, str, int, int, bool, int | None]


@dataclass(slots=True)
class _Riding:
    """A settle waiting for an admission to ride with: its two keys, its argument, what it was."""

    tokens_key: str
    leases_key: str
    arg: str
    item: SettleItem
    # When it leaves on its own if no admission takes it (event-loop clock).
    due: float


def _log_lost_settle(item: SettleItem, exc: BaseException) -> None:
    log.warning("rate-limit settle failed (%s); the reservation stays charged", type(exc).__name__)


def admission_decision(raw: object, backend: Backend | None) -> Decision:
    """The decision in an admission script's reply (one string of nine integers)."""
    fields = raw.split() if isinstance(raw, bytes) else []
    if len(fields) != 9:
        raise RedisError(f"unexpected admission reply {raw!r}")
    ok, code, retry, req_rem, req_reset, tok_rem, tok_reset, bucket, now = map(int, fields)
    return Decision(
        bool(ok),
        _REFUSALS[code],  # by index: Refusal(code) costs a microsecond per request
        retry,
        None if req_rem < 0 else req_rem,
        req_reset,
        None if tok_rem < 0 else tok_rem,
        tok_reset,
        bucket,
        now,
        backend,
    )


class RedisBackend:
    """Counters in Redis (standalone, Sentinel or Cluster), through a bounded connection pool."""

    def __init__(
        self,
        url: str | None = None,
        *,
        target: RedisTarget | None = None,
        max_connections: int = 32,
        lease_us: int = DEFAULT_LEASE_US,
        socket_timeout: float = 2.0,
        connect_timeout: float = 2.0,
    ) -> None:
        """Connect lazily to ``url`` (``redis://`` or ``rediss://``), or to ``target`` in any mode.

        The timeouts run on the event loop's clock: a loop busy with a burst of requests on a
        loaded node delays them too, and a tight value would mistake a busy replica for an
        outage (and fall back to per-replica limits). An unreachable Redis usually fails at
        once (connection refused); only a silent network costs the timeout, once per probe.
        """
        if target is None:
            if url is None:
                raise ValueError("RedisBackend needs a url or a target")
            target = RedisTarget.standalone(url)
        self.target = target
        self.url = target.url
        self._lease_us = lease_us
        # A burst of admissions queues, in order, on a semaphore sized like the pool instead of
        # opening hundreds of connections. (redis-py's BlockingConnectionPool is not fair: under a
        # sustained burst one waiter can starve past its timeout, which would read as an outage.)
        self._slots = asyncio.Semaphore(max_connections)
        # Cluster goes through redis-py's RedisCluster (slot map, MOVED/ASK); standalone and
        # Sentinel through a plain pool (a Sentinel pool finds the master on each new connection).
        self._cluster: RedisCluster | None = None
        self._cluster_start = ClusterStart()
        self._script_lock = asyncio.Lock()
        self._script_loads = 0
        # The load generation that last loaded each script (sha) on every primary.
        self._loaded_at: dict[str, int] = {}
        self._pool: ConnectionPool | None = None
        # A plain standalone URL: the lean pipelined connection (limits/resp.py); anything else
        # (Sentinel, URL options) redis-py's pool.
        address = lean_address(target.url) if target.mode == "standalone" else None
        self._lean = (
            LeanConnection(address, socket_timeout=socket_timeout, connect_timeout=connect_timeout)
            if address is not None
            else None
        )
        if target.mode == "cluster":
            cluster = target.client(
                max_connections=max_connections,
                socket_timeout=socket_timeout,
                connect_timeout=connect_timeout,
            )
            assert isinstance(cluster, RedisCluster)
            self._cluster = cluster
        elif self._lean is None:
            self._pool = target.connection_pool(
                max_connections=max_connections,
                socket_timeout=socket_timeout,
                connect_timeout=connect_timeout,
                retry=Retry(NoBackoff(), 0),
            )
        # Sentinel: keeps the pooled connections on the current master (started by the first command).
        self._master_watch = MasterWatch(self._pool)
        self._admit_sha = _sha(ADMIT_LUA)
        self._settle_sha = _sha(SETTLE_LUA)
        # Every script this backend runs, loaded together on a primary that lacks them.
        self._scripts = {self._admit_sha: ADMIT_LUA, self._settle_sha: SETTLE_LUA}
        self._sha_of: dict[str, str] = {}
        # Lean connection: settles waiting (at most SETTLE_DEFER) for the next admission's script.
        self._riding: list[_Riding] = []
        self._riding_timer: asyncio.TimerHandle | None = None
        self._riding_tasks: set[asyncio.Task[None]] = set()
        # Told about each settle that left without its caller and failed (ResilientRedisBackend
        # queues it for replay); by default the lease expires and the reservation stays charged.
        self.on_settle_lost: Callable[[SettleItem, BaseException], None] = _log_lost_settle

    async def _command(self, *args: str | int) -> object:
        """One command on a pooled connection, re-dialled once if it went stale.

        This is the hot path of every request, so it talks to the connection directly: the
        client's generic command machinery (retries, hooks, instrumentation) costs about as much
        CPU as the round trip itself. A repeated script is harmless: a repeated admission only
        over-counts, and settle is idempotent. On the lean connection the commands of one
        event-loop step share one write and their replies one read.
        """
        if self._lean is not None:
            return await self._lean.execute(*args)
        assert self._pool is not None
        conn = await self._pool.get_connection()  # type: ignore[call-arg]
        try:
            for attempt in (0, 1):
                try:
                    await conn.send_command(*args)
                    return await conn.read_response()
                except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError, TimeoutError):
                    await conn.disconnect()
                    if attempt:
                        raise
                except ResponseError:
                    raise
                except BaseException:
                    # Cancelled between send and read: the reply would desynchronise the connection.
                    await conn.disconnect()
                    raise
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            if self._master_watch.stale(conn):
                # Still on a master the Sentinels have replaced: reconnect on next use.
                await conn.disconnect()
            await self._pool.release(conn)

    async def _run_on_cluster(
        self, cluster: RedisCluster, source: str, sha: str, keys: list[str], args: list[str | int]
    ) -> object:
        # Every key of one call shares a hash tag, so RedisCluster routes it to one slot's primary.
        await self._cluster_start.ready(cluster)
        loads = self._script_loads
        try:
            return await cluster.execute_command("EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            # A primary that never saw the script (new, restarted or just promoted): load it on all,
            # once for a whole burst of callers that all met NOSCRIPT (many concurrent loads also
            # trip redis-py's connection setup).
            async with self._script_lock:
                # Skipped only when a load that began after this call looked has loaded this very
                # script (a script first run while an earlier load was under way is not in it).
                if self._loaded_at.get(sha, -1) <= loads:
                    self._script_loads += 1
                    for script_sha, script in list(self._scripts.items()):
                        await cluster.script_load(script)  # type: ignore[attr-defined]  # (types-redis lags)
                        self._loaded_at[script_sha] = self._script_loads
            return await cluster.execute_command("EVALSHA", sha, len(keys), *keys, *args)

    async def _run(self, source: str, sha: str, keys: list[str], args: list[str | int]) -> object:
        if self._lean is not None:
            # One pipelined connection: nothing to queue for, no pool to exhaust.
            try:
                return await self._command("EVALSHA", sha, len(keys), *keys, *args)
            except NoScriptError:
                await self._command("SCRIPT", "LOAD", source)
                return await self._command("EVALSHA", sha, len(keys), *keys, *args)
        async with self._slots:
            if self._cluster is not None:
                return await self._run_on_cluster(self._cluster, source, sha, keys, args)
            self._master_watch.start()
            try:
                return await self._command("EVALSHA", sha, len(keys), *keys, *args)
            except NoScriptError:
                await self._command("SCRIPT", "LOAD", source)
                return await self._command("EVALSHA", sha, len(keys), *keys, *args)

    async def run_script(self, source: str, keys: list[str], args: list[str | int]) -> object:
        """Run another atomic script (e.g. the spend budgets') on the same pool; keys share one hash tag."""
        sha = self._sha_of.get(source)
        if sha is None:
            sha = self._sha_of[source] = _sha(source)
            self._scripts[sha] = source
        return await self._run(source, sha, keys, args)

    async def admit(
        self, key: str, spec: LimitSpec, tokens: int, request_id: str, now_us: int | None = None
    ) -> Decision:
        """One EVALSHA: check and charge every limit of ``spec`` atomically.

        The settles waiting to ride (lean connection) go with it and are applied first.
        """
        keys = window_keys(key)
        args: list[str | int] = [admit_arg(spec, tokens, now_us, self._lease_us), request_id]
        riding = self._take_riding()
        for item in riding:
            keys += (item.tokens_key, item.leases_key)
            args.append(item.arg)
        try:
            raw = await self._run(ADMIT_LUA, self._admit_sha, keys, args)
        except BaseException as exc:
            if riding:
                self._riding_failed(riding, exc)
            raise
        return admission_decision(raw, self)

    async def settle(
        self,
        key: str,
        request_id: str,
        bucket: int,
        token_refund: int,
        track_tokens: bool,
        now_us: int | None = None,
    ) -> None:
        """Free the slot and refund (or charge) tokens.

        On the lean connection the settle rides: it returns at once, and the next admission's
        script applies it first (one script, one reply for both), or it leaves on its own
        after ``SETTLE_DEFER``; if that fails, ``on_settle_lost`` is told. It rides even with
        nothing in flight: one request at a time, the next one usually comes within that
        millisecond, and each request then costs one round trip instead of two. Without the
        lean connection (Sentinel, Cluster) this is one EVALSHA, awaited, its errors raised.
        """
        keys = window_keys(key)
        arg = settle_arg(request_id, bucket, token_refund, track_tokens, now_us)
        if self._lean is None:
            await self._run(SETTLE_LUA, self._settle_sha, [keys[2], keys[3]], [arg])
            return
        item: SettleItem = (key, request_id, bucket, token_refund, track_tokens, now_us)
        loop = asyncio.get_running_loop()
        due = loop.time() + SETTLE_DEFER
        self._riding.append(_Riding(keys[2], keys[3], arg, item, due))
        if self._riding_timer is None:
            self._riding_timer = loop.call_at(due, self._send_riding)

    @property
    def riding_settles(self) -> int:
        """Settles waiting for an admission to ride with (lean connection)."""
        return len(self._riding)

    def _take_riding(self) -> list[_Riding]:
        """The settles waiting to ride, now leaving (with an admission or on their own).

        The timer is left running (it finds nothing to send, or waits on for the settles
        queued since): at most one timer per SETTLE_DEFER under load, not one armed and
        cancelled per request.
        """
        riding = self._riding
        if riding:
            self._riding = []
        return riding

    def _riding_failed(self, riding: list[_Riding], exc: BaseException) -> None:
        if isinstance(exc, asyncio.CancelledError):
            # The carrier gave up before its reply: whether the settles landed is unknown, so they
            # wait for the next carrier (a settle applied twice changes nothing).
            loop = asyncio.get_running_loop()
            for ride in riding:
                ride.due = loop.time() + SETTLE_DEFER
            self._riding[:0] = riding
            if self._riding_timer is None:
                self._riding_timer = loop.call_at(riding[0].due, self._send_riding)
            return
        for ride in riding:
            self.on_settle_lost(ride.item, exc)

    def _send_riding(self) -> None:
        # The oldest queued settle is due (no admission took it within SETTLE_DEFER): every queued
        # settle leaves as one script. Settles queued after an admission took the earlier ones
        # wait until the first of them is due.
        self._riding_timer = None
        if not self._riding:
            return
        loop = asyncio.get_running_loop()
        due = self._riding[0].due
        if due > loop.time():
            self._riding_timer = loop.call_at(due, self._send_riding)
            return
        task = loop.create_task(self._settle_riding(self._take_riding()))
        self._riding_tasks.add(task)
        task.add_done_callback(self._riding_tasks.discard)

    async def _settle_riding(self, riding: list[_Riding]) -> None:
        keys = [key for ride in riding for key in (ride.tokens_key, ride.leases_key)]
        try:
            await self._run(SETTLE_LUA, self._settle_sha, keys, [ride.arg for ride in riding])
        except Exception as exc:
            self._riding_failed(riding, exc)

    async def send_riding(self) -> None:
        """Send the settles waiting to ride now, and wait until every settle sent has landed
        (or was handed to ``on_settle_lost``)."""
        if self._riding_timer is not None:
            self._riding_timer.cancel()
            self._riding_timer = None
        riding = self._take_riding()
        if riding:
            await self._settle_riding(riding)
        if self._riding_tasks:
            await asyncio.wait(list(self._riding_tasks))

    async def aclose(self) -> None:
        """Close pooled connections (settles still waiting to ride are sent first)."""
        self._master_watch.stop()
        await self.send_riding()
        if self._lean is not None:
            await self._lean.aclose()
        if self._cluster is not None:
            await self._cluster.aclose()  # type: ignore[attr-defined]  # (types-redis lags redis-py)
        if self._pool is not None:
            await self._pool.disconnect()


class ResilientRedisBackend:
    """Redis with the policy's ``onRedisUnavailable`` fallback and automatic recovery.

    After a failure Redis is left alone for ``probe_interval`` seconds (admissions
    go straight to the fallback, so an outage costs no timeouts per request); the
    next admission after that probes Redis again and, on success, ends the outage.
    """

    def __init__(
        self,
        url: str | None,
        *,
        fail_open: bool,
        probe_interval: float = 0.5,
        local: MemoryBackend | None = None,
        redis: RedisBackend | None = None,
        report_metric: bool = True,
        target: RedisTarget | None = None,
    ) -> None:
        """Wrap a Redis backend at ``url`` (or ``target``, any mode); neither counts as Redis unavailable.

        ``report_metric`` False keeps a secondary user (the provider gate) off the degraded gauge.
        """
        self._report = report_metric
        if target is None and url:
            target = RedisTarget.standalone(url)
        if target is None and redis is not None:
            target = redis.target
        self.target = target
        self.url = url if target is None else target.url
        self.fail_open = fail_open
        self._probe_interval = probe_interval
        self.local = local if local is not None else MemoryBackend()
        self.redis = redis if redis is not None else (RedisBackend(target=target) if target else None)
        self._down_until = 0.0
        # Settles that could not reach Redis, replayed when it answers again (settle is idempotent
        # on the server, so a replay of one that did land changes nothing).
        self._pending: deque[SettleItem] = deque(maxlen=10_000)
        self._flush_task: asyncio.Task[None] | None = None
        self.degraded = self.redis is None
        self._gauge(self.degraded)
        if self.redis is not None:
            # A settle that rode with an admission (or left on its own) and failed: replayed too.
            self.redis.on_settle_lost = self._settle_lost
        if self.redis is None:
            log.error(
                "rate limiting: no Redis connection (a Redis file of the credentials is missing); %s",
                "local limiter" if fail_open else "refusing with 503",
            )
        else:
            log.info("rate limiting: Redis %s", self.redis.target.describe())

    def _gauge(self, degraded: bool) -> None:
        if self._report:
            RATE_LIMIT_BACKEND_DEGRADED.set(1 if degraded else 0)

    def available(self) -> bool:
        """True when Redis is there to be asked (not in an outage's quiet period)."""
        return self.redis is not None and time.monotonic() >= self._down_until

    def mark_down(self, exc: BaseException) -> None:
        """Redis failed: leave it alone for the probe interval (and say so once)."""
        self._down_until = time.monotonic() + self._probe_interval
        if not self.degraded:
            self.degraded = True
            self._gauge(True)
            log.error(
                "rate limiting: Redis unavailable (%s: %s); %s",
                type(exc).__name__,
                exc,
                "serving with the local limiter (failOpen)"
                if self.fail_open
                else "refusing with 503 (failClosed)",
            )

    def mark_up(self) -> None:
        """Redis answered: end an outage, replay the settles it held back."""
        if self.degraded:
            self.degraded = False
            self._gauge(False)
            log.warning("rate limiting: Redis reachable again; shared limits restored")
        if self._pending and (self._flush_task is None or self._flush_task.done()):
            self._flush_task = asyncio.get_running_loop().create_task(self.flush_pending())

    def _settle_lost(self, item: SettleItem, exc: BaseException) -> None:
        if isinstance(exc, UNAVAILABLE):
            self.mark_down(exc)
            self._pending.append(item)
        else:
            _log_lost_settle(item, exc)

    @property
    def pending_settles(self) -> int:
        """Settles waiting for Redis to come back."""
        return len(self._pending)

    async def flush_pending(self) -> None:
        """Replay settles that failed during an outage; stops at the first failure."""
        while self._pending and self.redis is not None:
            item = self._pending.popleft()
            try:
                await self.redis.settle(*item)
            except UNAVAILABLE as exc:
                self._pending.appendleft(item)
                self.mark_down(exc)
                return

    async def admit(
        self, key: str, spec: LimitSpec, tokens: int, request_id: str, now_us: int | None = None
    ) -> Decision:
        """Admit through Redis, or through the fallback while Redis is unavailable."""
        if self.redis is not None and time.monotonic() >= self._down_until:
            try:
                decision = await self.redis.admit(key, spec, tokens, request_id, now_us)
            except UNAVAILABLE as exc:
                self.mark_down(exc)
            else:
                self.mark_up()
                decision.backend = self
                return decision
        if self.fail_open:
            return await self.local.admit(key, spec, tokens, request_id, now_us)
        return Decision(
            allowed=False,
            refusal=Refusal.BACKEND,
            retry_after_us=US_PER_S,
            requests_remaining=None,
            requests_reset_us=0,
            tokens_remaining=None,
            tokens_reset_us=0,
            bucket=0,
            now_us=0,
            backend=None,
        )

    async def settle(
        self,
        key: str,
        request_id: str,
        bucket: int,
        token_refund: int,
        track_tokens: bool,
        now_us: int | None = None,
    ) -> None:
        """Settle a Redis admission; during an outage it is queued and replayed on recovery."""
        if self.redis is None:
            return
        item = (key, request_id, bucket, token_refund, track_tokens, now_us)
        if time.monotonic() < self._down_until:
            self._pending.append(item)
            return
        try:
            await self.redis.settle(*item)
        except UNAVAILABLE as exc:
            self.mark_down(exc)
            self._pending.append(item)

    async def aclose(self) -> None:
        """Close the Redis pool."""
        if self._flush_task is not None and not self._flush_task.done():
            self._flush_task.cancel()
        if self.redis is not None:
            await self.redis.aclose()
