"""Rate limits through a Redis Sentinel failover: overshoot and time without a master, per policy.

For each ``onRedisUnavailable`` (failOpen, failClosed) and each fault (the master SIGKILLed,
or a ``SENTINEL FAILOVER`` forced with the master alive), a fresh setup (one master, one
replica, three Sentinels on loopback, ``down-after-milliseconds`` 1000) takes a steady load
from ``--replicas`` limiters (each its own client, like replicas of one agent) against one
budget, the fault happens mid-load, and the load goes on until every limiter counts in
Redis again. Printed per run: admissions, accepted (by Redis and by the per-replica
fallback), 503s, overshoot above the budget, writes the promoted replica never saw, how long
the limiters were degraded, how long the Sentinels took to promote the replica and to turn a
still-running old master into a replica (until then it takes writes that are later lost).

    python bench/redis_failover.py [--limit 400] [--replicas 2] [--repeat 1]

Bounded: each run gives up after 25 s; a whole default run takes about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "operator"), str(REPO)]

from tests.support.failover_load import FailoverReport, run_failover_load  # noqa: E402
from tests.support.redis_cluster import RedisSentinelSetup  # noqa: E402


def one_run(on_unavailable: str, fault: str, limit: int, replicas: int) -> FailoverReport:
    """A fresh Sentinel setup, one loaded failover, torn down."""
    with RedisSentinelSetup(password=secrets.token_hex(12)) as setup:
        return asyncio.run(
            run_failover_load(
                setup,
                on_unavailable=on_unavailable,
                fault="kill" if fault == "kill" else "failover",
                limit=limit,
                instances=replicas,
            )
        )


def main() -> None:
    """Run every combination and print the table (JSON rows on the last line)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=400, help="requests per minute of the shared budget")
    parser.add_argument("--replicas", type=int, default=2, help="limiters (replicas) sharing the budget")
    parser.add_argument("--repeat", type=int, default=1, help="runs per combination")
    args = parser.parse_args()
    header = (
        f"{'policy':<10} {'fault':<8} {'admissions':>10} {'accepted':>8} {'fallback':>8} {'503':>5} "
        f"{'overshoot':>9} {'%':>5} {'lost':>5} {'degraded s':>10} {'promote s':>9} {'demote s':>8}"
    )
    print(f"Sentinel failover under load: budget {args.limit}/min, {args.replicas} replicas, loopback")
    print(header)
    print("-" * len(header))
    rows = []
    for on_unavailable in ("failOpen", "failClosed"):
        for fault in ("kill", "failover"):
            for _ in range(args.repeat):
                r = one_run(on_unavailable, fault, args.limit, args.replicas)
                print(
                    f"{on_unavailable:<10} {fault:<8} {len(r.outcomes):>10} {r.accepted:>8} "
                    f"{r.accepted_locally:>8} {r.refused_503:>5} {r.overshoot:>9} "
                    f"{100 * r.overshoot / r.limit:>5.0f} {r.lost_writes:>5} {r.degraded_seconds:>10.2f} "
                    f"{r.new_master_at - r.fault_at:>9.2f} {r.demoted_at - r.fault_at:>8.2f}",
                    flush=True,
                )
                rows.append(
                    {
                        "policy": on_unavailable,
                        "fault": fault,
                        "admissions": len(r.outcomes),
                        "accepted": r.accepted,
                        "fallback": r.accepted_locally,
                        "refused_503": r.refused_503,
                        "overshoot": r.overshoot,
                        "lost_writes": r.lost_writes,
                        "degraded_s": round(r.degraded_seconds, 3),
                        "promote_s": round(r.new_master_at - r.fault_at, 3),
                        "demote_s": round(r.demoted_at - r.fault_at, 3),
                    }
                )
    print(
        "failOpen admits through each replica's own limiter while no master answers (up to the budget per "
        "replica); failClosed answers 503. 'lost' counts admissions the old master acknowledged and the "
        "promoted replica never received (asynchronous replication)."
    )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
