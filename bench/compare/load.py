"""Load of the side-by-side bench: wrk for throughput and latency, the Go probe for time to first token.

Both run pinned to the load core, one wrk thread with ``c`` keep-alive
connections; their own CPU is read from the kernel's accounting of waited-for
children, so the report can show that the load core was not the limit. At c > 1
the probe runs on one more connection beside wrk, so that time to first token is
measured under the same load; at c = 1 it runs after wrk, on its own.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

LUA_SCRIPT = Path(__file__).resolve().parent / "post.lua"


@dataclass(frozen=True)
class Target:
    """Where requests go: URL and bearer key."""

    name: str
    url: str
    key: str


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run reports (latencies in ms; ``failed``: error statuses, ``errors``: every error)."""

    requests: int
    failed: int
    errors: int
    seconds: float
    p50: float
    p90: float
    p99: float

    @property
    def ok(self) -> int:
        """Requests answered with a success status."""
        return max(0, self.requests - self.failed)

    @property
    def rps(self) -> float:
        """Successful requests per second."""
        return self.ok / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class TTFTResult:
    """What one TTFT probe run reports (ms)."""

    requests: int
    errors: int
    p50: float
    p90: float
    p99: float


def run_wrk(
    wrk: str, target: Target, body: Path, connections: int, seconds: float, cpu: int, timeout: float
) -> WrkResult:
    """Run wrk against ``target`` for ``seconds`` with ``connections`` connections on one thread."""
    env = {**os.environ, "BENCH_BODY_FILE": str(body), "BENCH_AUTH": target.key}
    args = ["taskset", "-c", str(cpu), wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    args += [f"--timeout={max(1, round(timeout))}s", "-s", str(LUA_SCRIPT), target.url]
    started = time.monotonic()
    result = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    line = next((x for x in result.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no figures (exit {result.returncode}): {result.stderr.strip()[-500:]}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    return WrkResult(
        requests=raw["requests"],
        # wrk counts answers with an error status in requests; socket errors and timeouts are no answers.
        failed=raw["status"],
        errors=raw["status"] + raw["timeout"] + raw["read"] + raw["write"] + raw["connect"],
        seconds=raw["duration_us"] / 1e6 or wall,
        p50=raw["p50_us"] / 1000.0,
        p90=raw["p90_us"] / 1000.0,
        p99=raw["p99_us"] / 1000.0,
    )


class Probe:
    """A running TTFT probe: every worker sends streamed requests one after another for a time."""

    def __init__(
        self, probe: Path, target: Target, body: Path, connections: int, seconds: float, cpu: int
    ) -> None:
        args = ["taskset", "-c", str(cpu), str(probe), "-url", target.url, "-key", target.key]
        args += ["-body", str(body), "-c", str(connections), "-d", f"{seconds}s"]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish(self) -> TTFTResult:
        """Wait for the probe (it ends the requests it started) and read its figures."""
        out, err = self.proc.communicate()
        if self.proc.returncode != 0:
            raise RuntimeError(f"TTFT probe failed (exit {self.proc.returncode}): {err.strip()[-500:]}")
        raw = json.loads(out.strip().splitlines()[-1])
        return TTFTResult(raw["requests"], raw["errors"], raw["ttft_p50"], raw["ttft_p90"], raw["ttft_p99"])


def children_cpu() -> float:
    """CPU seconds of the waited-for children of this process (wrk and the probe, here)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
