"""Scaling of the agent runtime with ``server.workers``: the same load on 1, 2, ... worker processes.

The Go fake upstream and wrk (the side-by-side bench's own, ``tools.py``) run
pinned to ``--load-cpu``; the runtime may use every core of ``--gateway-cpus``.
For each worker count, mode and concurrency: req/s, p50 and p99 (wrk), the
runtime's CPU per request (supervisor and workers together, from /proc) and
the cores it and the load used. A pod's gain from workers is the req/s ratio
when the cores are the runtime's own; on a machine whose cores are shared with
the load (the 2-core default here), the cores-used columns say how much of the
machine the runtime could have.

Run: ``PYTHONPATH=operator:. python bench/compare/workers.py [--workers 1 2] [--concurrency 16 64]``
Loopback only, bounded (cells of ``--seconds``); not part of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "operator"), str(ROOT)]

from bench.compare import runtime_gateway  # noqa: E402
from bench.compare.load import Target, children_cpu, run_wrk  # noqa: E402
from bench.compare.procs import Processes, cpu_seconds, free_port, memory_mb, wait_port, wait_quiet  # noqa: E402
from bench.compare.tools import build_go, ensure_wrk  # noqa: E402

UPSTREAM_KEY = "sk-bench-upstream"
CALLER_KEY = "sk-bench-caller"
PROMPT = "Hello benchmark, please say something short."


def _bodies(workdir: Path) -> dict[str, Path]:
    bodies = {}
    for mode in ("complete", "stream"):
        path = workdir / f"body-{mode}.json"
        body = {"model": "m", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 64}
        path.write_text(json.dumps({**body, "stream": mode == "stream"}))
        bodies[mode] = path
    return bodies


def main(argv: list[str] | None = None) -> None:
    """Measure, print one table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--modes", nargs="+", choices=("complete", "stream"), default=["complete", "stream"])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell")
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--gateway-cpus", default="0,1", help="cores the runtime may use (taskset list)")
    parser.add_argument("--load-cpu", type=int, default=1, help="core of the upstream and wrk")
    args = parser.parse_args(argv)
    wrk, go = ensure_wrk(), build_go()
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp, Processes(Path(tmp)) as procs:
        workdir = Path(tmp)
        bodies = _bodies(workdir)
        upstream_port = free_port()
        upstream = procs.start(
            "upstream",
            [str(go.upstream), "-addr", f"127.0.0.1:{upstream_port}", "-api-key", UPSTREAM_KEY],
            args.load_cpu,
        )
        wait_port(upstream_port, upstream.proc, timeout=10)
        for rep in range(args.repetitions):
            for workers in args.workers:
                port = free_port()
                files = workdir / f"w{workers}-{rep}"
                files.mkdir()
                config, creds = runtime_gateway.write_files(
                    files,
                    upstream_port=upstream_port,
                    upstream_key=UPSTREAM_KEY,
                    caller_key=CALLER_KEY,
                    port=port,
                    rate_limit="none",
                    workers=workers,
                )
                env = runtime_gateway.environment(dict(os.environ), config, creds)
                runtime = procs.start(
                    f"runtime-{workers}-{rep}", runtime_gateway.command(), args.gateway_cpus, env
                )
                wait_port(port, runtime.proc, timeout=60)
                # Every worker up (each binds the port on its own): a moment after the first.
                time.sleep(1.0 + 0.5 * workers)
                target = Target("runtime", f"http://127.0.0.1:{port}/v1/chat/completions", CALLER_KEY)
                for mode in args.modes:
                    for c in args.concurrency:
                        run_wrk(wrk, target, bodies[mode], c, 1, args.load_cpu, timeout=30)
                        wait_quiet(runtime.pid)
                        cpu0, load0, wall0 = cpu_seconds(runtime.pid), children_cpu(), time.monotonic()
                        up0 = cpu_seconds(upstream.pid)
                        result = run_wrk(
                            wrk, target, bodies[mode], c, args.seconds, args.load_cpu, timeout=30
                        )
                        wall = time.monotonic() - wall0
                        used = cpu_seconds(runtime.pid) - cpu0
                        load = children_cpu() - load0 + cpu_seconds(upstream.pid) - up0
                        per_request = used / result.ok * 1000 if result.ok else float("nan")
                        rows.append(
                            f"| {workers} | {mode} | {c} | {rep + 1} | {result.rps:,.0f} | {result.p50:.2f} ms "
                            f"| {result.p99:.2f} ms | {per_request:.3f} ms | {used / wall:.2f} | {load / wall:.2f} "
                            f"| {result.errors} |"
                        )
                        print(rows[-1], flush=True)
                rss, _ = memory_mb(runtime.pid)
                print(f"  {workers} worker(s): RSS of the runtime (all processes) {rss:.0f} MB", flush=True)
                procs.stop(runtime)
    print()
    print(
        f"Runtime on cores {args.gateway_cpus}; upstream and wrk on core {args.load_cpu}; {os.cpu_count()} cores."
    )
    print(
        "| workers | mode | c | rep | req/s | p50 | p99 | runtime CPU/request | runtime cores | load cores | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
