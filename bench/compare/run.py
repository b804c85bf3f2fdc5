"""Side-by-side bench: the agent runtime, LiteLLM proxy and the direct upstream, behind one fast fake upstream.

Everything runs on loopback. The gateway under test is pinned to one core; the
compiled fake upstream (Go) and the load generator (wrk; a Go probe for time to
first token) share the other, and their CPU share is reported so that one can
see they were not the limit. For each repetition both gateways are started
fresh (cold start: process start to first successful request), then every mode
(complete, stream, paced stream) and concurrency is measured for each target
in turn, so that the three see the same machine at nearly the same time.

    make bench-compare                     # the full run (< 30 min), writes docs/benchmarks.md
    python bench/compare/run.py --quick    # about 3 minutes, prints the report
    python bench/compare/run.py --help     # modes, concurrencies, repetitions, rate limit, cores

First use installs LiteLLM proxy (pinned) into its own venv under the cache
(about 2 minutes) and builds the Go programs; wrk comes from Debian.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "operator"), str(ROOT)]

from bench.compare import litellm_proxy, runtime_gateway  # noqa: E402
from bench.compare.figures import Cell, Meta, Plan, Results, Start  # noqa: E402
from bench.compare.load import Probe, Target, children_cpu, run_wrk  # noqa: E402
from bench.compare.procs import (  # noqa: E402
    Processes,
    Started,
    cpu_seconds,
    free_port,
    memory_mb,
    wait_port,
    wait_quiet,
)
from bench.compare.report import Figures, page, splice  # noqa: E402
from bench.compare.tools import GoBinaries, build_go, cache_dir, ensure_wrk, go_version, wrk_version  # noqa: E402

UPSTREAM_KEY = "sk-bench-upstream"
CALLER_KEY = "sk-bench-caller"
PROMPT = "Hello benchmark, please say something short."
MODES = ("complete", "stream", "paced")
TARGETS = ("direct", "runtime", "litellm")


def _write_bodies(workdir: Path) -> dict[str, Path]:
    """The same request body for every target: the paced one carries the upstream's marker."""
    bodies = {}
    for mode in MODES:
        prompt = f"[paced] {PROMPT}" if mode == "paced" else PROMPT
        body = {
            "model": litellm_proxy.MODEL,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 64,
            "stream": mode != "complete",
        }
        path = workdir / f"body-{mode}.json"
        path.write_text(json.dumps(body))
        bodies[mode] = path
    return bodies


def _first_success(port: int, key: str, body: bytes, started: Started, timeout: float) -> float:
    """Seconds from process start to the first 200 answer to a chat completion."""
    deadline = time.monotonic() + timeout
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    while time.monotonic() < deadline:
        if started.proc.poll() is not None:
            raise RuntimeError(f"{started.name} exited with {started.proc.returncode}; see {started.log}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    return time.monotonic() - started.started_at
            finally:
                conn.close()
        time.sleep(0.02)
    raise TimeoutError(f"{started.name} gave no successful answer within {timeout:.0f} s; see {started.log}")


class Bench:
    """One run of the plan: starts what it measures, measures, stops everything."""

    def __init__(
        self, plan: Plan, wrk: str, go: GoBinaries, litellm_venv: Path | None, procs: Processes, workdir: Path
    ) -> None:
        self.plan = plan
        self.wrk = wrk
        self.go = go
        self.litellm_venv = litellm_venv
        self.procs = procs
        self.workdir = workdir
        self.bodies = _write_bodies(workdir)
        self.results = Results()
        self.upstream_port = free_port()
        self.upstream: Started | None = None
        self.redis_url: str | None = None
        # Latency last seen per (target, mode): sets how long a cell at a higher concurrency must run.
        self.last: dict[tuple[str, str], tuple[int, float]] = {}
        self.deadline = time.monotonic() + plan.budget

    def start_upstream(self) -> None:
        """The Go fake upstream on the load core."""
        args = [str(self.go.upstream), "-addr", f"127.0.0.1:{self.upstream_port}", "-api-key", UPSTREAM_KEY]
        self.upstream = self.procs.start("upstream", args, self.plan.load_cpu)
        wait_port(self.upstream_port, self.upstream.proc, timeout=10)
        if self.plan.rate_limit == "redis":
            port = free_port()
            redis = [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ]
            wait_port(port, self.procs.start("redis", redis, self.plan.load_cpu).proc, timeout=10)
            self.redis_url = f"redis://127.0.0.1:{port}/0"

    def start_gateway(self, name: str, rep: int) -> tuple[Started, Target]:
        """Start one gateway on the gateway core and time its cold start."""
        port = free_port()
        env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        workdir = self.workdir / f"{name}-{rep}"
        workdir.mkdir()
        if name == "runtime":
            config, creds = runtime_gateway.write_files(
                workdir,
                upstream_port=self.upstream_port,
                upstream_key=UPSTREAM_KEY,
                caller_key=CALLER_KEY,
                port=port,
                rate_limit=self.plan.rate_limit,
                redis_url=self.redis_url,
                busy_poll=self.plan.busy_poll,
            )
            started = self.procs.start(
                f"runtime-{rep}",
                runtime_gateway.command(),
                self.plan.gateway_cpu,
                runtime_gateway.environment(env, config, creds),
            )
        else:
            assert self.litellm_venv is not None
            config = workdir / "litellm.yaml"
            litellm_proxy.write_config(config, self.upstream_port, UPSTREAM_KEY, CALLER_KEY)
            started = self.procs.start(
                f"litellm-{rep}",
                litellm_proxy.command(self.litellm_venv, config, port),
                self.plan.gateway_cpu,
                litellm_proxy.environment(env),
            )
        cold = _first_success(port, CALLER_KEY, self.bodies["complete"].read_bytes(), started, timeout=180)
        rss_idle, _ = memory_mb(started.pid)
        self.results.starts.append(Start(name, rep, cold, rss_idle, float("nan"), float("nan")))
        print(f"  {name}: cold start {cold:.2f} s, RSS {rss_idle:.0f} MB", flush=True)
        return started, Target(name, f"http://127.0.0.1:{port}/v1/chat/completions", CALLER_KEY)

    def _cell_seconds(self, target: str, mode: str, c: int) -> float:
        """The base time, longer where the latency seen at a lower concurrency says few answers would come."""
        seconds = self.plan.seconds
        if (target, mode) in self.last:
            c_seen, p50_seen = self.last[(target, mode)]
            expected = p50_seen / 1000.0 * max(1.0, c / c_seen)
            seconds = max(seconds, min(self.plan.max_cell, 4 * expected))
        return seconds

    def measure(self, target: Target, gateway: Started | None, mode: str, c: int, rep: int) -> None:
        """One cell: warm up, wait until the gateway is idle, run wrk (and the TTFT probe for streams)."""
        assert self.upstream is not None
        plan, body = self.plan, self.bodies[mode]
        run_wrk(self.wrk, target, body, min(c, 16), plan.warmup, plan.load_cpu, timeout=plan.max_cell * 2)
        if gateway is not None:
            wait_quiet(gateway.pid)
        seconds = self._cell_seconds(target.name, mode, c)
        streamed = mode != "complete"
        up0 = cpu_seconds(self.upstream.pid)
        gw0 = cpu_seconds(gateway.pid) if gateway else 0.0
        load0 = children_cpu()
        wall0 = time.monotonic()
        probe = Probe(self.go.ttft, target, body, 1, seconds, plan.load_cpu) if streamed and c > 1 else None
        result = run_wrk(self.wrk, target, body, c, seconds, plan.load_cpu, timeout=plan.max_cell * 2)
        gw_cpu = cpu_seconds(gateway.pid) - gw0 if gateway else None
        ttft = probe.finish() if probe else None
        wall = time.monotonic() - wall0
        up_cpu = cpu_seconds(self.upstream.pid) - up0
        load_cpu = children_cpu() - load0
        if streamed and c == 1:
            if gateway is not None:
                wait_quiet(gateway.pid)
            ttft = Probe(self.go.ttft, target, body, 1, plan.ttft_seconds, plan.load_cpu).finish()
        if gateway is not None:
            wait_quiet(gateway.pid)
        # The probe's requests beside wrk cost the gateway too: count them in CPU per request.
        answered = result.ok + (ttft.requests if probe and ttft else 0)
        if result.ok:
            self.last[(target.name, mode)] = (c, result.p50)
        cell = Cell(
            target=target.name,
            mode=mode,
            c=c,
            rep=rep,
            seconds=result.seconds,
            ok=result.ok,
            errors=result.errors + (ttft.errors if ttft else 0),
            rps=result.rps,
            p50=result.p50,
            p90=result.p90,
            p99=result.p99,
            ttft_p50=ttft.p50 if ttft and ttft.requests else None,
            ttft_p99=ttft.p99 if ttft and ttft.requests else None,
            cpu_per_req_ms=(gw_cpu / answered * 1000.0) if gw_cpu is not None and answered else None,
            gateway_core=gw_cpu / wall if gw_cpu is not None else None,
            upstream_core=up_cpu / wall,
            loadgen_core=load_cpu / wall,
        )
        self.results.cells.append(cell)
        extra = f" ttft p50 {ttft.p50:.2f} ms" if ttft else ""
        cpu = f" cpu/req {cell.cpu_per_req_ms:.3f} ms" if cell.cpu_per_req_ms is not None else ""
        print(
            f"  {mode:<8} c={c:<3} {target.name:<7} {cell.rps:>8.0f} req/s p50 {cell.p50:>8.2f} ms"
            f" p99 {cell.p99:>8.2f} ms{extra}{cpu} err {cell.errors}",
            flush=True,
        )

    def run(self) -> Results:
        """Every repetition: fresh gateways, every cell, memory after load, gateways stopped."""
        self.results.load_before = os.getloadavg()[0]
        self.start_upstream()
        for rep in range(1, self.plan.repetitions + 1):
            print(
                f"repetition {rep}/{self.plan.repetitions} (load average {os.getloadavg()[0]:.2f})",
                flush=True,
            )
            self.results.load_samples.append(os.getloadavg()[0])
            gateways: dict[str, Started | None] = {"direct": None}
            targets = {"direct": Target("direct", self._direct_url(), UPSTREAM_KEY)}
            for name in self.plan.targets:
                if name != "direct":
                    gateways[name], targets[name] = self.start_gateway(name, rep)
            for mode in self.plan.modes:
                for c in self.plan.concurrency:
                    for name in self.plan.targets:
                        if time.monotonic() > self.deadline:
                            self.results.skipped += 1
                            continue
                        self.measure(targets[name], gateways[name], mode, c, rep)
            for name, started in gateways.items():
                if started is None:
                    continue
                rss, peak = memory_mb(started.pid)
                for start in self.results.starts:
                    if (start.target, start.rep) == (name, rep):
                        start.rss_after_mb, start.rss_peak_mb = rss, peak
                self.procs.stop(started)
        self.results.load_after = os.getloadavg()[0]
        return self.results

    def _direct_url(self) -> str:
        return f"http://127.0.0.1:{self.upstream_port}/v1/chat/completions"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def _memory_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return float("nan")


def _commit() -> str:
    """The checkout's commit, marked when the runtime or the bench differ from it."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    changed = subprocess.run(
        [*git, "status", "--porcelain", "--", "agent_runtime", "bench/compare"],
        capture_output=True,
        text=True,
        check=False,
    )
    commit = head.stdout.strip() or "unknown"
    return f"{commit} (with uncommitted changes)" if changed.stdout.strip() else commit


def _parse(argv: list[str] | None) -> tuple[Plan, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="about 3 minutes: c=1,16,64, one repetition, 2 s cells"
    )
    parser.add_argument("--modes", nargs="+", choices=MODES, help="default: all")
    parser.add_argument("--concurrency", type=int, nargs="+", help="default: 1 16 64 256 (quick: 1 16 64)")
    parser.add_argument("--repetitions", type=int, help="default: 2 (quick: 1)")
    parser.add_argument("--seconds", type=float, help="measured seconds per cell (default 8, quick 2)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each cell")
    parser.add_argument(
        "--ttft-seconds", type=float, help="seconds of the TTFT probe at c=1 (at c > 1 it runs beside wrk)"
    )
    parser.add_argument(
        "--max-cell", type=float, help="longest a slow target's cell may run (default 20, quick 6)"
    )
    parser.add_argument("--budget", type=float, help="seconds after which remaining cells are skipped")
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    parser.add_argument(
        "--rate-limit",
        choices=("none", "memory", "redis"),
        default="none",
        help="a rate-limit policy on the runtime (budgets never reached); redis starts a redis-server",
    )
    parser.add_argument(
        "--busy-poll",
        metavar="DURATION",
        help="the runtime's server.busyPoll (default: the runtime's own, 1ms); 0s gives the sleeping baseline",
    )
    parser.add_argument("--gateway-cpu", type=int, default=0, help="core of the gateway under test")
    parser.add_argument("--load-cpu", type=int, default=1, help="core of the upstream and the load generator")
    parser.add_argument(
        "--docs", help="page to write the report into, - for none (default: docs/benchmarks.md; quick: none)"
    )
    parser.add_argument("--render", metavar="JSON", help="only render the report of a run's raw figures")
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    plan = Plan(
        modes=args.modes or list(MODES),
        concurrency=args.concurrency or ([1, 16, 64] if quick else [1, 16, 64, 256]),
        repetitions=args.repetitions or (1 if quick else 2),
        seconds=args.seconds or (2.0 if quick else 8.0),
        warmup=args.warmup,
        ttft_seconds=args.ttft_seconds or (1.0 if quick else 2.0),
        max_cell=args.max_cell or (6.0 if quick else 20.0),
        budget=args.budget or (240.0 if quick else 27 * 60.0),
        targets=[t for t in TARGETS if t in args.targets],
        rate_limit=args.rate_limit,
        busy_poll=args.busy_poll,
        gateway_cpu=args.gateway_cpu,
        load_cpu=args.load_cpu,
        quick=quick,
    )
    return plan, args


def main(argv: list[str] | None = None) -> None:
    """Run the bench, print the report, write it into docs/benchmarks.md when asked to."""
    plan, known = _parse(argv)
    if known.render:
        plan, meta, results = _load(Path(known.render))
        _publish(known.docs, plan, meta, results, Path(known.render))
        return
    # SIGTERM (make interrupted, a CI timeout) unwinds like Ctrl-C, so every process started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cpus = os.sched_getaffinity(0)
    if {plan.gateway_cpu, plan.load_cpu} - cpus or plan.gateway_cpu == plan.load_cpu:
        raise SystemExit(f"--gateway-cpu and --load-cpu must be two different cores of {sorted(cpus)}")
    begun = time.monotonic()
    wrk = ensure_wrk()
    go = build_go()
    venv = litellm_proxy.ensure_venv() if "litellm" in plan.targets else None
    # The driver waits on its children; it stays off the gateway's core.
    os.sched_setaffinity(0, {plan.load_cpu})
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp, Processes(Path(tmp)) as procs:
        try:
            results = Bench(plan, wrk, go, venv, procs, Path(tmp)).run()
        except Exception:
            for log in sorted(Path(tmp).glob("*.log")):
                tail = log.read_text(errors="replace").splitlines()[-5:]
                print(f"--- {log.name}\n" + "\n".join(tail), file=sys.stderr)
            raise
    meta = Meta(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        command=" ".join(["python bench/compare/run.py", *(sys.argv[1:] if argv is None else argv)]),
        cpu_model=_cpu_model(),
        cores=os.cpu_count() or 0,
        memory_gb=_memory_gb(),
        kernel=platform.release(),
        python=platform.python_version(),
        runtime_commit=_commit(),
        litellm=litellm_proxy.version(venv) if venv else "none",
        go=go_version(),
        wrk=wrk_version(wrk),
        minutes=(time.monotonic() - begun) / 60.0,
    )
    raw = cache_dir() / "last-run.json"
    raw.write_text(
        json.dumps({"plan": asdict(plan), "meta": asdict(meta), "results": asdict(results)}, indent=1)
    )
    _publish(known.docs, plan, meta, results, raw)


def _load(path: Path) -> tuple[Plan, Meta, Results]:
    """Plan, machine and figures of a run, from its raw JSON."""
    raw = json.loads(path.read_text())
    results = raw["results"]
    results["cells"] = [Cell(**x) for x in results["cells"]]
    results["starts"] = [Start(**x) for x in results["starts"]]
    return Plan(**raw["plan"]), Meta(**raw["meta"]), Results(**results)


def _publish(docs: str | None, plan: Plan, meta: Meta, results: Results, raw: Path) -> None:
    """Print the report; write it into the docs page unless it was a quick run (or ``--docs -``)."""
    section = page(meta, plan, results, Figures(results.cells, results.starts))
    if docs is None:
        docs = "-" if plan.quick else str(ROOT / "docs" / "benchmarks.md")
    if docs == "-":
        print(section)
    else:
        path = Path(docs)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(splice(path.read_text() if path.exists() else None, section))
        print(section)
        print(f"written into {path}; raw figures in {raw}")


if __name__ == "__main__":
    main()
