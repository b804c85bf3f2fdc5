"""Load balancing inside a chain step: the spread and the latency effect of each strategy.

Starts two fake OpenAI upstreams as subprocesses on loopback, a slow one (``--slow`` seconds
to the first token) and a fast one (``--fast``), and drives ``LLMManager.stream`` in this
process: ``--requests`` streamed requests, ``--concurrency`` at a time, for each of

- ``none``: the plain chain slow -> fast (no balancing: every request goes to the first entry);
- ``weight``: one step of both members, weights 1:1 (smooth weighted round robin);
- ``leastOutstanding``: one step, fewest in-flight requests first;
- ``lowestLatency``: one step, lowest recent time to first token, re-probing every ``--probe``.

Prints, per strategy, the share of requests each upstream served and the p50/p99 latency of
a whole streamed answer, as seen by the caller of the manager. Loopback only; each run is
bounded by ``--requests`` (at worst ``requests x slow / concurrency`` seconds).

``--cost`` prints instead what balancing costs the manager per request, in CPU time: the
step's ordering plus the in-flight and latency bookkeeping of one attempt, for a step of two
members, against walking a plain chain (no network; this process's CPU time, so it holds on a
busy machine).

Run: ``PYTHONPATH=operator:. python bench/load_balance.py [--requests 300] [--concurrency 8] [--cost]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "operator"), str(ROOT)]

from agent_runtime.config import LLMRuntimeConfig  # noqa: E402
from agent_runtime.llm import ChatMessage, ChatRequest, Completed, LLMManager  # noqa: E402
from agent_runtime.llm.entries import Step, build_snapshot  # noqa: E402
from tests.support.net import free_port, wait_for_port  # noqa: E402

STRATEGIES = ("none", "weight", "leastOutstanding", "lowestLatency")


@contextlib.contextmanager
def _upstream(port: int, first_token: float) -> Iterator[None]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'operator'}{os.pathsep}{ROOT}"}
    cmd = [sys.executable, "-m", "agent_runtime.testing", "--kind", "openai", "--port", str(port)]
    cmd += ["--first-token-latency", str(first_token), "--tokens", "8"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, timeout=20)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _config(strategy: str, ports: dict[str, int], probe: str) -> LLMRuntimeConfig:
    chain: list[dict[str, Any]] = [
        {
            "id": f"bench/{name}",
            "type": "openai",
            "endpoint": f"http://127.0.0.1:{port}/v1",
            "model": "m",
            "retry": {"maxAttempts": 1},
        }
        for name, port in ports.items()
    ]
    data: dict[str, Any] = {"chain": chain}
    if strategy != "none":
        data["steps"] = [{"size": len(chain), "strategy": strategy, "probeInterval": probe}]
    return LLMRuntimeConfig.model_validate(data)


async def _run(config: LLMRuntimeConfig, requests: int, concurrency: int) -> tuple[Counter[str], list[float]]:
    manager = LLMManager(config, lambda _: None)
    request = ChatRequest([ChatMessage("user", "Hello benchmark, please say something short.")], max_tokens=8)
    served: Counter[str] = Counter()
    latencies: list[float] = []
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            async for event in manager.stream(request):
                if isinstance(event, Completed):
                    served[event.provider] += 1
            latencies.append(time.perf_counter() - t0)

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await manager.aclose()
    return served, sorted(latencies)


def _cost(strategies: list[str], rounds: int) -> None:
    """CPU time per request of ordering a step and counting one attempt on the member it picked."""
    ports = {"a": 1, "b": 2}
    print(f"{'strategy':<17} {'CPU/request':>12}")
    for strategy in strategies:
        snap = build_snapshot(_config(strategy, ports, "5s"), {}, {}, time.monotonic, {})
        t0 = time.process_time()
        if snap.steps is None:
            for _ in range(rounds):
                for _entry in snap.entries:
                    break
        else:
            step = snap.steps[0]
            assert isinstance(step, Step)
            for _ in range(rounds):
                load = step.walk()[0].load
                assert load is not None
                load.started()
                load.sample(0.01, time.monotonic())
                load.ended()
        per_request = (time.process_time() - t0) / rounds
        print(f"{strategy:<17} {per_request * 1e6:>10.2f}us", flush=True)
    print("none: the plain chain's walk; the others: the step's order + in-flight and latency bookkeeping")


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def main() -> None:
    """Run every strategy against the slow and the fast upstream and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300, help="streamed requests per strategy")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--slow", type=float, default=0.2, help="slow upstream: seconds to the first token")
    parser.add_argument("--fast", type=float, default=0.02, help="fast upstream: seconds to the first token")
    parser.add_argument("--probe", default="1s", help="lowestLatency probeInterval")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--cost", action="store_true", help="print the CPU cost per request instead")
    parser.add_argument("--rounds", type=int, default=200_000, help="requests simulated by --cost")
    args = parser.parse_args()
    if args.cost:
        _cost(args.strategies, args.rounds)
        return

    ports = {"slow": free_port(), "fast": free_port()}
    with _upstream(ports["slow"], args.slow), _upstream(ports["fast"], args.fast):
        print(
            f"slow upstream {args.slow * 1000:.0f} ms, fast upstream {args.fast * 1000:.0f} ms to the first token;"
            f" {args.requests} streamed requests per strategy, concurrency {args.concurrency}"
        )
        header = f"{'strategy':<17} {'slow':>6} {'fast':>6} | {'p50':>8} {'p99':>8} {'wall':>7}"
        print(header)
        print("-" * len(header))
        for strategy in args.strategies:
            t0 = time.perf_counter()
            served, latencies = asyncio.run(
                _run(_config(strategy, ports, args.probe), args.requests, args.concurrency)
            )
            wall = time.perf_counter() - t0
            total = sum(served.values()) or 1
            print(
                f"{strategy:<17} {served['bench/slow'] / total:>6.1%} {served['bench/fast'] / total:>6.1%} |"
                f" {_pct(latencies, 0.5):>6.1f}ms {_pct(latencies, 0.99):>6.1f}ms {wall:>6.2f}s",
                flush=True,
            )
    print(
        "slow/fast: share of the requests each upstream answered; p50/p99: whole streamed answer, caller side"
    )


if __name__ == "__main__":
    main()
