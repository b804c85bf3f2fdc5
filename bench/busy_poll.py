"""What one event-loop wake-up costs, and what busy polling (``server.busyPoll``) saves per wait.

One client on uvloop sends commands one at a time to a loopback redis-server (``PING``, and the
rate limiter's admission script carrying the previous admission's settle, as a request does)
through the limiter's own connection, first with the loop
sleeping between a command and its reply (``busyPoll: 0s``), then with ``BusyPoll`` keeping it
polling. Rounds alternate (sleeping, polling, sleeping ...) so that both see the same machine.
Prints p50/p90/p99 per round trip, the client's CPU per round trip, the ratio of polling
to sleeping, and the time Redis itself spends per command. redis-server runs on another core than the client when there are two.

    PYTHONPATH=operator:. python bench/busy_poll.py [--n 3000] [--rounds 3] [--budget-ms 1]

Loopback only; starts and stops its own redis-server (Debian's, installed by scripts/setup.sh).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import cast

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "operator"), str(REPO)]

import redis  # noqa: E402
import uvloop  # noqa: E402

from agent_runtime.busy_poll import BusyPoll, Kick  # noqa: E402
from agent_runtime.limits.base import LimitSpec  # noqa: E402
from agent_runtime.limits.redis import RedisBackend  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

SPEC = LimitSpec(requests_per_minute=10**8, tokens_per_minute=10**10, concurrency=10**6)


def cpu_seconds() -> float:
    """This process's user + system CPU seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(url: str, what: str, n: int, poll: BusyPoll) -> tuple[list[float], float]:
    """``n`` round trips one at a time; the loop polls while a round trip is out when ``poll`` has a budget."""
    backend = RedisBackend(url)
    try:
        for i in range(100):  # connect, load the script, warm up
            await backend.admit("bench{k}", SPEC, 10, f"warm{i}")
        latencies: list[float] = []
        began_cpu = cpu_seconds()
        for i in range(n):
            poll.kick(Kick.START, 1)
            began = time.perf_counter()
            if what == "ping":
                await backend._command("PING")
                latencies.append(time.perf_counter() - began)
            else:
                decision = await backend.admit("bench{k}", SPEC, 10, f"r{i}")
                latencies.append(time.perf_counter() - began)
                # As a request does: its settle rides with the next admission.
                await backend.settle("bench{k}", f"r{i}", decision.bucket, 5, True)
            poll.kick(Kick.END, 0)
        return latencies, (cpu_seconds() - began_cpu) / n
    finally:
        await backend.aclose()


def server_time_per_command(url: str) -> dict[str, float]:
    """Redis's mean microseconds per call of each command it ran (``INFO commandstats``)."""
    client = redis.Redis.from_url(url)
    try:
        stats = cast(dict[str, dict[str, float]], client.info("commandstats"))
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): float(row["usec_per_call"]) for name, row in stats.items()}


def quantile(values: list[float], q: float) -> float:
    """The q-quantile of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    """Run the rounds and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=3000, help="round trips per cell")
    parser.add_argument("--rounds", type=int, default=3, help="sleeping/polling pairs")
    parser.add_argument("--budget-ms", type=float, default=1.0, help="the polling budget (server.busyPoll)")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    server = RedisServer().start()
    try:
        if len(cores) > 1 and server.pid is not None:
            os.sched_setaffinity(server.pid, {cores[-1]})
            os.sched_setaffinity(0, {cores[0]})
        cells: dict[tuple[str, str], list[tuple[list[float], float]]] = {}
        for _ in range(args.rounds):
            for what in ("ping", "admit"):
                for mode, budget in (("sleeping", 0.0), ("polling", args.budget_ms / 1000)):
                    result = uvloop.run(measure(server.url, what, args.n, BusyPoll(budget)))
                    cells.setdefault((what, mode), []).append(result)
        server_us = server_time_per_command(server.url)
    finally:
        server.close()
    print(f"{args.n} round trips per cell, {args.rounds} rounds, budget {args.budget_ms:g} ms, cores {cores}")
    print("| command | loop | p50 | p90 | p99 | client CPU per round trip | p50 polling / sleeping |")
    print("|---|---|---|---|---|---|---|")
    for what in ("ping", "admit"):
        p50s = {}
        for mode in ("sleeping", "polling"):
            runs = cells[(what, mode)]
            every = [v for latencies, _ in runs for v in latencies]
            p50s[mode] = statistics.median(every)
            cpu = statistics.median(c for _, c in runs)
            ratio = f"{p50s['polling'] / p50s['sleeping']:.2f}x" if mode == "polling" else ""
            print(
                f"| {what} | {mode} | {p50s[mode] * 1e6:.0f} us | {quantile(every, 0.9) * 1e6:.0f} us "
                f"| {quantile(every, 0.99) * 1e6:.0f} us | {cpu * 1e6:.0f} us | {ratio} |"
            )
    # What Redis itself spends inside each command (mean over every call, warm-ups included):
    # the part of a round trip no client-side change can remove.
    print(
        f"Redis's own time per command (INFO commandstats): PING {server_us.get('ping', 0.0):.1f} us, "
        f"admission script with its riding settle {server_us.get('evalsha', 0.0):.1f} us"
    )


if __name__ == "__main__":
    main()
