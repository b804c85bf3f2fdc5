"""Rate-limiter benchmark: admissions per second and per-admission latency, memory vs Redis.

Runs in one process and one event loop, with a no-op limiter (no policy) as the
baseline, so "added" columns are what the limiter itself costs. Redis is a real
redis-server on loopback, started here unless ``--redis-url`` names one.

    PYTHONPATH=operator:. python bench/ratelimit.py [--n 5000] [--concurrency 64]

Every admission runs the full policy (requests + tokens + concurrency, then settle
for the round-trip figures) against 1000 subjects, with budgets large enough that
nothing is refused: the figures are for the accept path, which is the common one.
"cpu us/op" is the client's CPU one admission at a time (a Redis settle then has nothing
in flight to ride with: its own round trip); "cpu @conc" is the same with ``--concurrency``
admissions in flight (settles ride with the next admission's script).

``--full-windows`` first gives every subject a full minute of usage (a bucket for each of the
last 60 seconds in its request and token windows), as under steady traffic: the script's time
then shows what a full window costs it, which a short run from empty windows never reaches.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path[:0] = [
    str(Path(__file__).resolve().parents[1]),
    str(Path(__file__).resolve().parents[1] / "operator"),
]

from agent_runtime.config import RateLimitConfig  # noqa: E402
from agent_runtime.limits import Subject, build_limiter  # noqa: E402
from agent_runtime.limits.policy import RateLimiter  # noqa: E402

SUBJECTS = [Subject("apiKey", f"key-{i}") for i in range(1000)]


def _config(backend: str) -> RateLimitConfig:
    return RateLimitConfig.model_validate(
        {
            "policy": "bench/policy",
            "limits": {"requests_per_minute": 10**8, "tokens_per_minute": 10**10, "concurrency": 10**6},
            "backend": {"type": backend, "redis_url_file": "url", "key_prefix": "bench:rl:"},
        }
    )


def _percentile(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1000.0


async def _latencies(op: Callable[[int], Awaitable[None]], n: int) -> list[int]:
    """One admission at a time: the latency a single request sees."""
    out = []
    for i in range(n):
        start = time.perf_counter_ns()
        await op(i)
        out.append(time.perf_counter_ns() - start)
    return sorted(out)


async def _throughput(op: Callable[[int], Awaitable[None]], n: int, concurrency: int) -> float:
    """``concurrency`` admissions in flight at once: admissions per second."""
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await op(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - start)


def _ops(limiter: RateLimiter) -> dict[str, Callable[[int], Awaitable[None]]]:
    async def admit(i: int) -> None:
        a = await limiter.admit(SUBJECTS[i % len(SUBJECTS)], 500)
        assert a.allowed, a
        # Concurrency slots must come back, or the cap fills; settling locally costs nothing for no-op.
        a._settled = True

    async def admit_settle(i: int) -> None:
        a = await limiter.admit(SUBJECTS[i % len(SUBJECTS)], 500)
        assert a.allowed, a
        await a.settle(300)

    return {"admit": admit, "admit+settle": admit_settle}


Row = tuple[str, str, float, float, float, float, float, float | None]


async def _fill_windows(redis: Any, limiter: RateLimiter) -> None:
    """A bucket for each of the last 60 seconds in every subject's request and token windows."""
    seconds, _ = await redis.time()
    pipe = redis.pipeline(transaction=False)
    for subject in SUBJECTS:
        key = limiter.key_for(subject)
        buckets = {str(b): 1 for b in range(seconds - 59, seconds + 1)}
        pipe.hset(f"{key}:r", mapping=buckets)
        pipe.hset(f"{key}:t", mapping={b: 500 for b in buckets})
        pipe.expire(f"{key}:r", 120)
        pipe.expire(f"{key}:t", 120)
    await pipe.execute()


async def run(n: int, concurrency: int, redis_url: str, full_windows: bool = False) -> list[Row]:
    """Measure every backend.

    Rows of (backend, operation, p50 us, p99 us, admissions/s, client CPU us per operation
    one at a time and in flight, Redis server us per script call). The CPU figures hardly move with the machine's load,
    unlike wall-clock percentiles on a shared host.
    """
    from redis.asyncio import Redis

    limiters = {
        "no-op": build_limiter(None, lambda _: None),
        "memory": build_limiter(_config("memory"), lambda _: None),
        "redis": build_limiter(_config("redis"), lambda _: redis_url),
    }
    rows: list[Row] = []
    admin = Redis.from_url(redis_url)
    if full_windows:
        await _fill_windows(admin, limiters["redis"])

    async def ping(_: int) -> None:
        await admin.ping()

    async def measure(name: str, op_name: str, op: Callable[[int], Awaitable[None]], conc: int) -> None:
        await _latencies(op, min(n, 500))  # warm-up: script load, pool, caches
        await admin.config_resetstat()
        cpu = time.process_time_ns()
        lat = await _latencies(op, n)
        cpu_us = (time.process_time_ns() - cpu) / n / 1000
        stats = await admin.info("commandstats")
        server_us = stats.get("cmdstat_evalsha", {}).get("usec_per_call") if name == "redis" else None
        cpu = time.process_time_ns()
        rate = await _throughput(op, n * 2, conc)
        cpu_conc_us = (time.process_time_ns() - cpu) / (n * 2) / 1000
        rows.append(
            (
                name,
                op_name,
                _percentile(lat, 0.50),
                _percentile(lat, 0.99),
                rate,
                cpu_us,
                cpu_conc_us,
                server_us,
            )
        )

    # The floor under any Redis-backed limiter: one bare round trip with the same client library.
    await measure("redis", "PING", ping, 1)
    for name, limiter in limiters.items():
        for op_name, op in _ops(limiter).items():
            await measure(name, op_name, op, concurrency)
        await limiter.aclose()
    await admin.aclose()  # type: ignore[attr-defined]
    return rows


def main() -> None:
    """Parse arguments, start Redis if needed, run, print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=5000, help="admissions per latency run")
    parser.add_argument("--concurrency", type=int, default=64, help="admissions in flight for the rate run")
    parser.add_argument("--redis-url", default=None, help="use this Redis instead of starting one")
    parser.add_argument(
        "--loop", choices=["uvloop", "asyncio"], default="uvloop", help="event loop (the runtime uses uvloop)"
    )
    parser.add_argument(
        "--full-windows", action="store_true", help="start every subject with a full minute of usage"
    )
    args = parser.parse_args()

    server: Any = None
    url: str = args.redis_url
    if url is None:
        from tests.support.redis_server import RedisServer

        server = RedisServer().start()
        url = server.url
    try:
        if args.loop == "uvloop":
            import uvloop

            rows = uvloop.run(run(args.n, args.concurrency, url, args.full_windows))
        else:
            rows = asyncio.run(run(args.n, args.concurrency, url, args.full_windows))
    finally:
        if server is not None:
            server.close()

    base = {op: (p50, p99) for name, op, p50, p99, *_ in rows if name == "no-op"}
    base["PING"] = base["admit"]
    print(
        f"rate limiter: n={args.n} sequential, {args.n * 2} at concurrency {args.concurrency}; "
        f"Redis {url}; loop {args.loop}{'; full windows' if args.full_windows else ''}"
    )
    header = (
        f"{'backend':<8} {'operation':<13} {'p50 us':>9} {'p99 us':>9} {'+p50 us':>9} {'+p99 us':>9} "
        f"{'ops/s':>10} {'cpu us/op':>10} {'cpu @conc':>10} {'redis us/script':>16}"
    )
    print(header)
    print("-" * len(header))
    for name, op, p50, p99, rate, cpu_us, cpu_conc_us, server_us in rows:
        b50, b99 = base[op]
        server = f"{server_us:>16.1f}" if server_us is not None else f"{'-':>16}"
        print(
            f"{name:<8} {op:<13} {p50:>9.1f} {p99:>9.1f} {p50 - b50:>9.1f} {p99 - b99:>9.1f} "
            f"{rate:>10.0f} {cpu_us:>10.1f} {cpu_conc_us:>10.1f} {server}"
        )
    redis_admit = next(r for r in rows if r[0] == "redis" and r[1] == "admit")
    added = redis_admit[3] - base["admit"][1]
    verdict = "met" if added < 1000 else "NOT met"
    ping = next(r for r in rows if r[1] == "PING")
    cost = redis_admit[5] + (redis_admit[7] or 0.0) - ping[5]
    print(f"goal: Redis admission adds < 1 ms p99 on loopback -> {added / 1000:.3f} ms ({verdict})")
    print(
        f"      of which a bare PING round trip is p50 {ping[2]:.0f} us / p99 {ping[3]:.0f} us on this machine now;"
    )
    print(
        f"      CPU the admission costs beyond a PING (client CPU + script time): {cost:.0f} us, "
        "the load-independent part of the added latency"
    )
    print(f"(load average now: {' '.join(f'{x:.2f}' for x in __import__('os').getloadavg())})")


if __name__ == "__main__":
    main()
