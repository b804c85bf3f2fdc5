"""What one request's session work costs in each store: load the history, then save the exchange.

For memory, a real redis-server and a real PostgreSQL (both started here, on loopback, the
database with fsync off as in the tests), ``concurrency`` clients each loop over their own
session for ``--seconds``: ``get`` (at most ``--turns`` turns of history) then ``append`` of a
user and an assistant turn, as the runtime does around an /assist call. Printed: p50 and p99 of
that pair, pairs per second, and the benchmark process's CPU per pair (the client side, which
is the runtime's share; the server's own CPU is not in it).

Run: ``PYTHONPATH=operator:. python bench/sessions.py [--seconds 3] [--concurrency 1 16 64]``
The end-to-end figure (through the runtime's /assist) is ``bench/runtime.py --sessions STORE``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "operator"), str(ROOT)]

from agent_runtime.sessions import MemorySessionStore, RedisSessionStore, SessionStore, Turn  # noqa: E402
from agent_runtime.sessions.postgres import PostgresSessionStore  # noqa: E402
from tests.support.postgres_server import PostgresServer  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

ANSWER = "A short answer of about the size a chat turn has, give or take a few words more."


@contextlib.asynccontextmanager
async def _store(kind: str, turns: int, pool_size: int) -> AsyncIterator[SessionStore]:
    store: SessionStore
    with contextlib.ExitStack() as servers:
        if kind == "memory":
            store = MemorySessionStore(3600, turns)
        elif kind == "redis":
            server = servers.enter_context(RedisServer())
            store = RedisSessionStore.from_url(server.url, 3600, turns, prefix="bench:")
        else:
            database = servers.enter_context(PostgresServer())
            store = PostgresSessionStore(database.dsn, 3600, turns, prefix="bench:", pool_size=pool_size)
            await store.start()
        try:
            yield store
        finally:
            await store.aclose()


async def _client(store: SessionStore, session: str, stop_at: float, latencies: list[float]) -> None:
    turns = [Turn("user", "What did I ask you before?"), Turn("assistant", ANSWER)]
    while True:
        start = time.perf_counter()
        if start >= stop_at:
            return
        await store.get(session)
        await store.append(session, turns)
        latencies.append(time.perf_counter() - start)


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


async def _run(args: argparse.Namespace) -> None:
    print(
        f"loadavg before: {os.getloadavg()[0]:.2f} (2-core machine shared with other work; figures are noisy)"
    )
    header = f"{'store':<9}{'c':>4} | {'p50':>8} {'p99':>8} {'pairs/s':>8} | {'client CPU/pair':>15}"
    print(header)
    print("-" * len(header))
    for kind in args.stores:
        async with _store(kind, args.turns, args.pool_size) as store:
            for c in args.concurrency:
                # Warm: every session holds its full history before the measured loop.
                warm = time.perf_counter() + 0.3
                await asyncio.gather(*(_client(store, f"s{i}", warm, []) for i in range(c)))
                latencies: list[float] = []
                cpu0, start = _cpu(), time.perf_counter()
                stop_at = start + args.seconds
                await asyncio.gather(*(_client(store, f"s{i}", stop_at, latencies) for i in range(c)))
                elapsed, cpu = time.perf_counter() - start, _cpu() - cpu0
                data = sorted(latencies)
                p50 = data[len(data) // 2] * 1000
                p99 = data[min(len(data) - 1, int(0.99 * len(data)))] * 1000
                print(
                    f"{kind:<9}{c:>4} | {p50:>6.3f}ms {p99:>6.3f}ms {len(data) / elapsed:>8.0f} |"
                    f" {cpu / len(data) * 1e6:>13.0f}us",
                    flush=True,
                )
    print(f"loadavg after: {os.getloadavg()[0]:.2f}")


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per cell")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--stores", nargs="+", default=["memory", "redis", "postgres"])
    parser.add_argument("--turns", type=int, default=10, help="history kept per session (maxTurns)")
    parser.add_argument("--pool-size", type=int, default=10, help="PostgreSQL pool size")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(_run(args))
    else:
        uvloop.run(_run(args))


if __name__ == "__main__":
    main()
