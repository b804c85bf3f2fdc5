"""Steady rate-limit load through a Sentinel failover, and what came out of it.

Used by ``tests/test_redis_sentinel.py`` (which holds the documented behaviour to account) and
by ``bench/redis_failover.py`` (which prints the table). Several limiters, each its own client
and pool like separate replicas, admit one request every ``interval`` seconds against one
shared budget (``countBy: agent``); at ``fault_at`` the master is killed (or a
``SENTINEL FAILOVER`` is forced) and the load goes on until every limiter has answered from
Redis again for ``settle`` seconds. Overshoot is what was admitted above the budget: with
failOpen the per-replica fallback limiters admit on their own during the outage; with
failClosed only writes the old master acknowledged but never replicated can add to it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Literal

from agent_runtime.config import RateLimitConfig
from agent_runtime.limits import build_limiter
from agent_runtime.limits.policy import RateLimiter
from tests.support.redis_cluster import MASTER_NAME, RedisSentinelSetup

Fault = Literal["kill", "failover"]
PASSWORD_FILE = "ratelimit-redis-password"


@dataclass(frozen=True, slots=True)
class Outcome:
    """One admission during the run."""

    at: float
    instance: int
    allowed: bool
    status: int
    degraded: bool


@dataclass
class FailoverReport:
    """Every admission of a run and the times of the fault and the new master."""

    on_unavailable: str
    fault: Fault
    limit: int
    instances: int
    fault_at: float = 0.0
    new_master_at: float = 0.0
    demoted_at: float = 0.0
    outcomes: list[Outcome] = field(default_factory=list)
    counted_after: int = 0

    @property
    def lost_writes(self) -> int:
        """Admissions Redis acknowledged that the promoted replica never counted."""
        return max(0, sum(o.allowed and not o.degraded for o in self.outcomes) - self.counted_after)

    @property
    def accepted(self) -> int:
        """Admissions let through, by Redis or by a fallback limiter."""
        return sum(o.allowed for o in self.outcomes)

    @property
    def accepted_locally(self) -> int:
        """Admissions let through by a per-replica fallback limiter."""
        return sum(o.allowed and o.degraded for o in self.outcomes)

    @property
    def refused_503(self) -> int:
        """failClosed refusals."""
        return sum(o.status == 503 for o in self.outcomes)

    @property
    def overshoot(self) -> int:
        """Admitted above the per-minute budget (0 when the budget held)."""
        return max(0, self.accepted - self.limit)

    @property
    def degraded_seconds(self) -> float:
        """From the first to the last admission that could not reach Redis."""
        times = [o.at for o in self.outcomes if o.degraded]
        return (max(times) - min(times)) if times else 0.0

    def line(self) -> str:
        """One printable summary."""
        return (
            f"{self.on_unavailable:<10} {self.fault:<8} limit={self.limit} admissions={len(self.outcomes)} "
            f"accepted={self.accepted} (fallback {self.accepted_locally}) 503={self.refused_503} "
            f"overshoot={self.overshoot} ({100 * self.overshoot / self.limit:.0f}%) lost={self.lost_writes} "
            f"degraded={self.degraded_seconds:.2f}s failover={self.new_master_at - self.fault_at:.2f}s"
        )


def sentinel_policy(setup: RedisSentinelSetup, limit: int, on_unavailable: str) -> RateLimitConfig:
    """A policy on the Sentinel setup's master, one budget for the whole agent."""
    redis: dict[str, object] = {
        "mode": "sentinel",
        "sentinels": setup.sentinel_addresses,
        "master_name": MASTER_NAME,
    }
    if setup.password:
        redis["password_file"] = PASSWORD_FILE
    return RateLimitConfig.model_validate(
        {
            "policy": "ns/failover",
            "count_by": "agent",
            "limits": {"requests_per_minute": limit},
            "backend": {"type": "redis", "redis": redis},
            "on_redis_unavailable": on_unavailable,
        }
    )


async def run_failover_load(
    setup: RedisSentinelSetup,
    *,
    on_unavailable: str,
    fault: Fault = "kill",
    limit: int = 400,
    instances: int = 2,
    interval: float = 0.004,
    fault_at: float = 0.8,
    settle: float = 1.0,
    bound: float = 25.0,
) -> FailoverReport:
    """Run the load, cause the fault, wait for recovery; bounded by ``bound`` seconds."""
    files = {PASSWORD_FILE: setup.password or ""}
    config = sentinel_policy(setup, limit, on_unavailable)
    limiters: list[RateLimiter] = [build_limiter(config, files.get) for _ in range(instances)]
    report = FailoverReport(on_unavailable, fault, limit, instances)
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    recovered_at: dict[int, float] = {}
    done = asyncio.Event()
    all_recovered = asyncio.Event()

    async def drive(index: int, limiter: RateLimiter) -> None:
        subject = limiter.subject(None)
        while not done.is_set():
            admission = await limiter.admit(subject, 0)
            now = time.monotonic() - start
            report.outcomes.append(
                Outcome(now, index, admission.allowed, admission.status, admission.degraded)
            )
            if admission.allowed:
                await admission.settle(0)
            if report.demoted_at and not admission.degraded:
                recovered_at.setdefault(index, now)
                if len(recovered_at) == instances:
                    all_recovered.set()
            await asyncio.sleep(interval)

    async def cause_fault() -> None:
        await asyncio.sleep(fault_at)
        report.fault_at = time.monotonic() - start
        cause = setup.kill_master if fault == "kill" else setup.force_failover
        old = await loop.run_in_executor(None, cause)
        await loop.run_in_executor(None, setup.wait_for_new_master, old)
        report.new_master_at = time.monotonic() - start
        # A forced failover leaves the old master up and taking writes until it is demoted;
        # recovery counts from then on, so that the writes it loses show in the overshoot.
        await loop.run_in_executor(None, setup.wait_for_demotion, old)
        report.demoted_at = time.monotonic() - start
        await all_recovered.wait()
        await asyncio.sleep(settle)
        done.set()

    try:
        await asyncio.wait_for(
            asyncio.gather(cause_fault(), *(drive(i, lim) for i, lim in enumerate(limiters))), bound
        )
        window = limiters[0].key_for(limiters[0].subject(None)) + ":r"
        report.counted_after = await loop.run_in_executor(None, _counted, setup, window)
    finally:
        done.set()
        for limiter in limiters:
            await limiter.aclose()
    return report


def _counted(setup: RedisSentinelSetup, window: str) -> int:
    """Admissions the current master holds in the request window."""
    _host, port = setup.master_address()
    server = next(s for s in (setup.master, setup.replica) if s.port == port)
    with setup.data_client(server) as client:
        # Buckets only: the negative fields are the window's running sum and oldest bucket.
        return sum(int(v) for k, v in client.hgetall(window).items() if not k.startswith("-"))
