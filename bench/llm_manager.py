"""CPU cost of the LLM manager alone: one upstream call, non-streamed and streamed.

Starts the fake OpenAI upstream (zero latency) as a subprocess and drives
``LLMManager.complete`` / ``LLMManager.stream`` in this process at several
concurrencies. Prints requests/s and this process's CPU time per request,
which, unlike wall-clock figures, stays meaningful on a busy machine.
``--httpx-transport`` uses httpx's own transport (httpcore + h11) instead of
the lean one, for comparison.

Run: ``PYTHONPATH=operator:. python bench/llm_manager.py [--seconds 2] [--httpx-transport]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "operator"), str(ROOT)]

import agent_runtime.llm.pool as pool_module  # noqa: E402
from agent_runtime.config import LLMRuntimeConfig  # noqa: E402
from agent_runtime.llm import ChatMessage, ChatRequest, LLMManager  # noqa: E402
from tests.support.net import free_port, wait_for_port  # noqa: E402


async def _run(port: int, seconds: float, concurrency: list[int], modes: list[str]) -> None:
    config = LLMRuntimeConfig.model_validate(
        {
            "chain": [
                {
                    "id": "bench/fake",
                    "type": "openai",
                    "endpoint": f"http://127.0.0.1:{port}/v1",
                    "model": "m",
                }
            ]
        }
    )
    manager = LLMManager(config, lambda _: None)
    request = ChatRequest([ChatMessage("user", "Hello benchmark, please say something short.")])
    print(f"{'mode':<9}{'c':>4} {'req/s':>8} {'CPU/req':>9}")
    try:
        for mode in modes:
            for c in concurrency:
                done = 0
                stop = time.perf_counter() + seconds

                async def worker(mode: str = mode, stop: float = stop) -> None:
                    nonlocal done
                    while time.perf_counter() < stop:
                        if mode == "complete":
                            await manager.complete(request)
                        else:
                            async for _ in manager.stream(request):
                                pass
                        done += 1

                cpu0, t0 = time.process_time(), time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(c)))
                cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
                print(f"{mode:<9}{c:>4} {done / wall:>8.0f} {cpu / max(1, done) * 1e6:>7.0f}us", flush=True)
    finally:
        await manager.aclose()


def main() -> None:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--modes", nargs="+", default=["complete", "stream"])
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument(
        "--httpx-transport", action="store_true", help="httpx's own transport instead of ours"
    )
    args = parser.parse_args()
    if args.httpx_transport:
        pool_module.proxied = lambda origin: True  # the pools then take httpx's transport
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'operator'}{os.pathsep}{ROOT}"}
    cmd = [sys.executable, "-m", "agent_runtime.testing", "--port", str(port), "--tokens", str(args.tokens)]
    upstream = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        try:
            import uvloop
        except ImportError:
            asyncio.run(_run(port, args.seconds, args.concurrency, args.modes))
        else:
            uvloop.run(_run(port, args.seconds, args.concurrency, args.modes))
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)


if __name__ == "__main__":
    main()
