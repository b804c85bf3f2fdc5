"""Overhead of the agent runtime over a direct upstream call.

Starts the fake OpenAI upstream (zero latency) and the agent runtime (one
uvicorn worker) as subprocesses on loopback, then for each mode and
concurrency measures the same request sent directly to the upstream and
through the runtime, in the same run:

- ``complete``: ``POST /v1/chat/completions`` non-streamed;
- ``stream``: ``POST /v1/chat/completions`` streamed (SSE);
- ``assist``: ``POST /assist`` (Sentient protocol, SSE) vs the direct streamed call;
- ``ws``: the same Sentient request over ``/ws`` (one WebSocket connection per request,
  handshake included; client: ``websockets``) vs the direct streamed call.

Latency is measured from the first byte of the request written to the last
byte of the response read, on keep-alive connections, by a minimal HTTP/1.1
client (so that the load generator costs little CPU next to the servers).
Added latency = runtime - direct (p50, p99); throughput = completed requests/s.

Run: ``PYTHONPATH=operator:. python bench/runtime.py [--seconds 3] [--concurrency 1 16 64]``, once
without and once with one of these (each turns one feature on, to compare the two runs):

- ``--guardrails``: adds :data:`BENCH_GUARDRAILS` to the runtime's config;
- ``--balance STRATEGY``: the chain is one load-balanced step of two members, both on the fake upstream;
- ``--sessions memory|redis|postgres``: keeps the conversation of each /assist (and /ws) connection in
  that store (a real redis-server or PostgreSQL is started for the run): every request loads the
  session's history (at most :data:`BENCH_SESSION_TURNS` turns) and appends its own exchange. Without
  it no activity id is sent and the store is never touched: compare the assist rows of both runs;
- ``--dev``: dev mode, the dashboard's capture bus on;
- ``--cache off|miss|hit``: the memory response cache on, with a 1 ms TTL so that every request
  misses (lookup, record, store: the cost a miss adds) or a 10 min TTL so that every request after
  the first is a hit (a replay, no upstream call);
- ``--rate-limit memory|redis``: an unlimited rate-limit policy (redis: a redis-server started here);
- ``--budgets``: prices the model and adds :data:`BENCH_BUDGETS` (two budgets, never exhausted);
- ``--auth apikey|jwt|opaque``: the caller's credential: an API key (default), a JWT access token or
  an opaque access token (introspected, then answered from the cache) of a real ORY Hydra started here;
- ``--roles``: adds :data:`BENCH_ROLES`, so that every request is also authorized by role;
- ``--tracing collector|down``: exports every request's spans to a real OpenTelemetry Collector
  started here, or to an endpoint nobody listens on; ``--sampling-ratio`` is the share recorded;
- ``--audit flag|sink``: ``flag`` makes every request write one audit record (a flag-only guardrail
  on the prompt); ``sink`` ships those records to a Splunk-HEC receiver in this process too (through
  the sink's spool): the sink's cost on the hot path is ``sink`` minus ``flag``.

Targets: added p50 < 2 ms at c=1, >= 1,000 req/s on one worker, RSS < 100 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "operator"), str(ROOT)]

from bench.compare.runtime_gateway import write_files  # noqa: E402
from tests.support.net import free_port, wait_for_port  # noqa: E402

API_KEY = "sk-bench-upstream"
CALLER_KEY = "sk-bench-caller"
PROMPT = "Hello benchmark, please say something short."

# What --guardrails turns on: every local check on the input, PII redaction on the answer
# (streamed answers through the withheld window). No moderation: a remote call is measured
# by bench/guardrails.py.
BENCH_GUARDRAILS: dict[str, object] = {
    "input": [
        {"size": {"maxChars": 32000, "maxMessages": 64}},
        {"patterns": {"deny": [r"(?i)\brm\s+-rf\b", r"(?i)drop\s+table"]}},
        {"pii": {"entities": ["secretKey"]}, "action": "redact"},
        {"injection": {"threshold": 0.5}},
    ],
    "output": [{"pii": {}, "action": "redact"}],
}


# History kept per session with --sessions: the upstream prompt grows by at most this many short
# messages, so the figure is the stores' load and save cost, not a longer upstream call.
BENCH_SESSION_TURNS = 4


@contextlib.contextmanager
def _session_store(kind: str | None, config_file: Path, creds: Path) -> Iterator[None]:
    """Point the runtime's sessions at ``kind``, with its server running for the whole bench."""
    if kind is None:
        yield
        return
    import yaml

    config = yaml.safe_load(config_file.read_text())
    sessions: dict[str, object] = {"store": kind, "ttl": "1h", "maxTurns": BENCH_SESSION_TURNS}
    with contextlib.ExitStack() as stack:
        if kind == "redis":
            from tests.support.redis_server import RedisServer

            server = stack.enter_context(RedisServer())
            (creds / "sessions-redis-url").write_text(server.url)
            sessions["redisUrlFile"] = "sessions-redis-url"
        elif kind == "postgres":
            from tests.support.postgres_server import PostgresServer

            database = stack.enter_context(PostgresServer())
            (creds / "sessions-postgres-dsn").write_text(database.dsn)
            sessions["postgres"] = {"dsnFile": "sessions-postgres-dsn"}
        config["sessions"] = sessions
        config_file.write_text(yaml.safe_dump(config))
        yield


# What --budgets turns on: one budget per API key and one for the whole agent, per day and
# month, so every request reserves and settles on two budget subjects (four windows).
BENCH_BUDGETS: list[dict[str, object]] = [
    {"name": "per-key", "per": "apiKey", "perDay": "1000000", "perMonth": "10000000"},
    {"name": "agent", "per": "agent", "perDay": "1000000", "perMonth": "10000000"},
]
BENCH_PRICE = {"currency": "USD", "inputPerMillion": "2.50", "outputPerMillion": "10.00"}


def _add_budgets(config_file: Path) -> None:
    import yaml

    config = yaml.safe_load(config_file.read_text())
    config["llm"]["chain"][0]["price"] = BENCH_PRICE
    config.setdefault("rateLimit", {"policy": "bench/budgets", "limits": {}})["budgets"] = BENCH_BUDGETS
    config_file.write_text(yaml.safe_dump(config))


@contextlib.contextmanager
def _oidc_caller(kind: str, config_file: Path, creds: Path) -> Iterator[str]:
    """A Hydra issuer, the runtime's OIDC config pointing at it, and a caller token of ``kind``."""
    import yaml

    from tests.support.hydra import Hydra

    audience = "bench-agent"
    with Hydra() as hydra:
        client_secret = hydra.client(
            "bench", scope="agent.chat", audience=[audience], strategy="jwt" if kind == "jwt" else "opaque"
        )
        introspector_secret = hydra.client("bench-introspector", scope="", audience=[])
        (creds / "oidc-client-secret").write_text(introspector_secret)
        config = yaml.safe_load(config_file.read_text())
        config["auth"]["oidc"] = {
            "issuer": hydra.issuer,
            "audiences": [audience],
            "introspection": {
                "endpoint": hydra.introspection_endpoint,
                "clientID": "bench-introspector",
                "clientSecretFile": "oidc-client-secret",
            },
        }
        config_file.write_text(yaml.safe_dump(config))
        yield hydra.token("bench", client_secret, scope="agent.chat", audience=audience)


# What --roles turns on: the bench caller (API key "bench" or a token with scope agent.chat)
# holds the second role; the first is checked and passed over on every request.
BENCH_ROLES: dict[str, object] = {
    "roles": [
        {"name": "other", "routes": ["assist"], "apiKeys": ["nobody"]},
        {
            "name": "bench",
            "routes": ["chat", "assist", "ws"],
            "models": ["fake-model"],
            "apiKeys": ["bench"],
            "claims": [{"claim": "scope", "value": "agent.chat"}],
        },
    ]
}


def _add_roles(config_file: Path) -> None:
    import yaml

    config = yaml.safe_load(config_file.read_text())
    config["auth"]["authorization"] = BENCH_ROLES
    config_file.write_text(yaml.safe_dump(config))


def _add_guardrails(config_file: Path) -> None:
    import yaml

    config = yaml.safe_load(config_file.read_text())
    config["guardrails"] = BENCH_GUARDRAILS
    config_file.write_text(yaml.safe_dump(config))


def _add_tracing(config_file: Path, endpoint: str, ratio: float) -> None:
    import yaml

    config = yaml.safe_load(config_file.read_text())
    # The bench's requests carry no traceparent: the ratio alone decides what is recorded.
    config["tracing"] = {"endpoint": endpoint, "samplingRatio": ratio}
    config_file.write_text(yaml.safe_dump(config))


@contextlib.contextmanager
def _tracing_endpoint(mode: str) -> Iterator[str | None]:
    """The collector endpoint of ``--tracing``: a real collector, a closed port, or none."""
    if mode == "off":
        yield None
    elif mode == "down":
        yield f"http://127.0.0.1:{free_port()}"
    else:
        from tests.support.otel_collector import Collector

        with Collector() as collector:
            yield collector.endpoint


def _add_balance(config_file: Path, strategy: str) -> None:
    """The chain's entry twice (a second id, the same upstream and key) as one balanced step."""
    import yaml

    config = yaml.safe_load(config_file.read_text())
    entry = config["llm"]["chain"][0]
    config["llm"]["chain"] = [entry, {**entry, "id": entry["id"] + "-b"}]
    config["llm"]["steps"] = [{"size": 2, "strategy": strategy}]
    config_file.write_text(yaml.safe_dump(config))


# --audit flag|sink: one audit record per request (guardrail.verdict of a flag-only check).
BENCH_AUDIT_FLAG: dict[str, object] = {
    "input": [{"name": "audit-every-request", "patterns": {"deny": ["benchmark"]}, "action": "flag"}]
}


def _add_audit(config_file: Path, mode: str, spool: Path, hec_url: str | None) -> None:
    import yaml

    config = yaml.safe_load(config_file.read_text())
    config["guardrails"] = BENCH_AUDIT_FLAG
    if mode == "sink" and hec_url is not None:
        sink = {"name": "bench-hec", "http": {"url": hec_url}}
        config["audit"] = {"sinks": [sink], "spoolDir": str(spool)}
    config_file.write_text(yaml.safe_dump(config))


# The response cache of --cache: every request a miss (an entry expires before the next
# request reads it) or, after the first, a hit.
BENCH_CACHE: dict[str, dict[str, object]] = {"miss": {"ttl": "1ms"}, "hit": {"ttl": "10m"}}


def _add_cache(config_file: Path, mode: str) -> None:
    import yaml

    config = yaml.safe_load(config_file.read_text())
    config["cache"] = BENCH_CACHE[mode]
    config_file.write_text(yaml.safe_dump(config))


@dataclass
class Cell:
    """Measurements of one (target, mode, concurrency)."""

    latencies: list[float]
    errors: int
    elapsed: float
    warm_count: int = 0
    sent: int = 0

    @property
    def rps(self) -> float:
        """Completed requests per second."""
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float) -> float:
        """Latency percentile in milliseconds."""
        if not self.latencies:
            return float("nan")
        data = sorted(self.latencies)
        return data[min(len(data) - 1, int(q * len(data)))] * 1000.0


def _request_bytes(port: int, path: str, body: dict[str, object], key: str) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {key}\r\naccept: */*\r\ncontent-length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one whole response; returns (status, keep-alive)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    keep_alive = b"connection: close" not in lower
    at = lower.find(b"content-length:")
    if at >= 0:
        length = int(lower[at + 15 : lower.index(b"\r\n", at)])
        await reader.readexactly(length)
    elif b"transfer-encoding: chunked" in lower:
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            await reader.readexactly(size + 2)
    else:
        await reader.read()
        keep_alive = False
    return status, keep_alive


# One request, or distinct requests sent in turn (--cache miss: every one a miss).
Payload = bytes | list[bytes]
# One payload per worker: worker i sends the i-th (modulo the count), e.g. its own session.
PerWorker = tuple[Payload, ...]


def _pick(payload: Payload, cell: Cell) -> bytes:
    """The request to send next: the one payload, or the next of several (distinct requests)."""
    if isinstance(payload, bytes):
        return payload
    cell.sent += 1
    return payload[cell.sent % len(payload)]


async def _worker(port: int, payload: Payload, stop_at: float, warm_until: float, cell: Cell) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while True:
            start = time.perf_counter()
            if start >= stop_at:
                return
            writer.write(_pick(payload, cell))
            try:
                status, keep_alive = await _read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                status, keep_alive = 0, False
            end = time.perf_counter()
            if start >= warm_until:
                if status == 200:
                    cell.latencies.append(end - start)
                else:
                    cell.errors += 1
            else:
                cell.warm_count += 1
            if not keep_alive:
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
    finally:
        writer.close()


async def _ws_worker(port: int, payload: bytes, stop_at: float, warm_until: float, cell: Cell) -> None:
    """One ``/ws`` request per connection: handshake, the body, frames until the server closes."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import WebSocketException

    head, _, raw = payload.partition(b"\r\n\r\n")
    body = raw.decode()
    credential = next(line for line in head.decode().split("\r\n") if line.startswith("authorization:"))
    headers = {"authorization": credential.partition(": ")[2]}
    while True:
        start = time.perf_counter()
        if start >= stop_at:
            return
        code: int | None = None
        try:
            async with connect(
                f"ws://127.0.0.1:{port}/ws", additional_headers=headers, compression=None
            ) as ws:
                await ws.send(body)
                async for _ in ws:
                    pass
                code = ws.close_code
        except (OSError, WebSocketException):
            code = None
        end = time.perf_counter()
        if start >= warm_until:
            if code == 1000:
                cell.latencies.append(end - start)
            else:
                cell.errors += 1
        else:
            cell.warm_count += 1


async def _measure(
    port: int,
    payload: Payload | PerWorker,
    concurrency: int,
    seconds: float,
    warmup: float,
    websocket: bool = False,
) -> Cell:
    """One cell; a :data:`PerWorker` tuple gives worker i the payload i (modulo its length)."""
    cell = Cell([], 0, seconds)
    now = time.perf_counter()
    warm_until = now + warmup
    stop_at = warm_until + seconds
    per_worker = payload if isinstance(payload, tuple) else (payload,)
    if websocket:
        await asyncio.gather(
            *(
                _ws_worker(port, _pick(per_worker[i % len(per_worker)], cell), stop_at, warm_until, cell)
                for i in range(concurrency)
            )
        )
    else:
        await asyncio.gather(
            *(
                _worker(port, per_worker[i % len(per_worker)], stop_at, warm_until, cell)
                for i in range(concurrency)
            )
        )
    cell.elapsed = max(1e-9, time.perf_counter() - warm_until)
    return cell


def _variants(payload: bytes, count: int = 20_000) -> list[bytes]:
    """``count`` copies of a request whose prompt ends in a distinct number (the same length)."""
    marker = PROMPT.encode()
    return [payload.replace(marker, marker[:-5] + f"{i:05d}".encode(), 1) for i in range(count)]


def _cache_lookups(metrics_port: int) -> str:
    """The runtime's cache lookups by result (how many of the requests really hit or missed)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    counts = {}
    for line in text.splitlines():
        if line.startswith("sentient_cache_lookups_total{"):
            result = line.split('result="', 1)[1].split('"', 1)[0]
            counts[result] = int(float(line.rsplit(" ", 1)[1]))
    return ", ".join(f"{result} {count}" for result, count in sorted(counts.items())) or "no lookups"


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) in MB, from /proc."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = float(rest.split()[0]) / 1024.0
    return values.get("VmRSS", float("nan")), values.get("VmHWM", float("nan"))


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    # Output goes to a file: an unread pipe would fill up and block the server.
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=60)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        lines = log.read_text(errors="replace").splitlines()
        if lines:
            print(f"{log.name}: {len(lines)} lines of output, last: {lines[-1][:300]}")


def _wait_ready(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the runtime did not become ready")


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds per cell")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--modes", nargs="+", default=["complete", "stream", "assist"])
    parser.add_argument("--tokens", type=int, default=16, help="answer length of the fake upstream")
    parser.add_argument(
        "--profile", metavar="FILE", help="run the runtime under cProfile, write stats to FILE"
    )
    parser.add_argument(
        "--guardrails",
        action="store_true",
        help="turn on the guardrails of BENCH_GUARDRAILS (input and output)",
    )
    parser.add_argument(
        "--tracing",
        choices=["off", "collector", "down"],
        default="off",
        help="export traces to a real OpenTelemetry Collector, or to an endpoint that is down",
    )
    parser.add_argument(
        "--sampling-ratio",
        type=float,
        default=1.0,
        help="with --tracing: share of requests recorded (default 1: every request, the dearest case)",
    )
    parser.add_argument(
        "--balance",
        choices=["weight", "leastOutstanding", "lowestLatency"],
        help="make the chain one load-balanced step of two members (both on the fake upstream)",
    )
    parser.add_argument(
        "--sessions",
        choices=["memory", "redis", "postgres"],
        default=None,
        help="keep /assist and /ws conversations in this store (one session per client connection)",
    )
    parser.add_argument(
        "--dev",
        action="store_true",
        help="run the runtime in dev mode (SENTIENT_DEV=1: the dashboard's capture bus on)",
    )
    parser.add_argument(
        "--cache",
        choices=["off", "miss", "hit"],
        default="off",
        help="memory response cache: off, on with every request a miss, on with every request a hit",
    )
    parser.add_argument(
        "--rate-limit",
        choices=["none", "memory", "redis"],
        default="none",
        help="an unlimited rate-limit policy on this backend (redis: a redis-server started here)",
    )
    parser.add_argument("--budgets", action="store_true", help="price the model and add BENCH_BUDGETS")
    parser.add_argument(
        "--auth",
        choices=["apikey", "jwt", "opaque"],
        default="apikey",
        help="the caller's credential: API key, JWT or opaque OAuth2 access token (a local ORY Hydra)",
    )
    parser.add_argument("--roles", action="store_true", help="authorize every request by role (BENCH_ROLES)")
    parser.add_argument(
        "--audit",
        choices=["off", "flag", "sink"],
        default="off",
        help="flag: one audit record per request; sink: and shipped to a HEC receiver (see above)",
    )
    args = parser.parse_args()
    if args.audit != "off" and args.guardrails:
        parser.error("--audit uses the guardrails section: run it without --guardrails")
    hec = None
    if args.audit == "sink":
        from agent_runtime.testing.hec_receiver import HECReceiver

        hec = HECReceiver(token=None).start()
    args.hec = hec

    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'operator'}{os.pathsep}{ROOT}",
        "SENTIENT_LOG_LEVEL": "WARNING",
    }
    upstream_port, runtime_port, metrics_port = free_port(), free_port(), free_port()
    with contextlib.ExitStack() as stack:
        redis_url = None
        if args.rate_limit == "redis":
            from tests.support.redis_server import RedisServer

            redis_url = stack.enter_context(RedisServer()).url
        _bench(args, env, upstream_port, runtime_port, metrics_port, redis_url)


def _bench(
    args: argparse.Namespace,
    env: dict[str, str],
    upstream_port: int,
    runtime_port: int,
    metrics_port: int,
    redis_url: str | None,
) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="sentient-bench-") as tmp,
        _tracing_endpoint(args.tracing) as tracing_endpoint,
    ):
        # Callers authenticate (auth is on by default): one API key, bound hashed.
        config_file, creds = write_files(
            Path(tmp),
            upstream_port=upstream_port,
            upstream_key=API_KEY,
            caller_key=CALLER_KEY,
            port=runtime_port,
            rate_limit=args.rate_limit,
            redis_url=redis_url,
            metrics_port=metrics_port,
        )
        if args.guardrails:
            _add_guardrails(config_file)
        if tracing_endpoint is not None:
            _add_tracing(config_file, tracing_endpoint, args.sampling_ratio)
        if args.balance:
            _add_balance(config_file, args.balance)
        sessions = _session_store(args.sessions, config_file, creds)
        if args.cache != "off":
            _add_cache(config_file, args.cache)
        hec = args.hec
        if args.audit != "off":
            _add_audit(config_file, args.audit, Path(tmp) / "spool", hec.url if hec is not None else None)
        args.metrics_port = metrics_port
        if args.budgets:
            _add_budgets(config_file)
        if args.roles:
            _add_roles(config_file)
        callers = contextlib.ExitStack()
        args.caller = CALLER_KEY
        if args.auth != "apikey":
            args.caller = callers.enter_context(_oidc_caller(args.auth, config_file, creds))
        runtime_env = {**env, "SENTIENT_CONFIG": str(config_file), "SENTIENT_CREDENTIALS_DIR": str(creds)}
        runtime_env["SENTIENT_DEV"] = "1" if args.dev else ""

        runtime_cmd = [sys.executable, "-m", "agent_runtime"]
        if args.profile:
            runtime_cmd = [sys.executable, "-m", "cProfile", "-o", args.profile, "-m", "agent_runtime"]
        upstream_cmd = [sys.executable, "-m", "agent_runtime.testing", "--kind", "openai"]
        upstream_cmd += ["--port", str(upstream_port), "--api-key", API_KEY, "--tokens", str(args.tokens)]
        with (
            sessions,
            callers,
            _process(upstream_cmd, env, upstream_port, Path(tmp) / "upstream.log") as upstream,
            _process(runtime_cmd, runtime_env, runtime_port, Path(tmp) / "runtime.log") as runtime,
        ):
            _wait_ready(runtime_port)
            rss_idle, _ = _rss_mb(runtime.pid)
            main_coro = _run(args, upstream_port, runtime_port, (upstream.pid, runtime.pid), rss_idle)
            try:
                import uvloop
            except ImportError:
                asyncio.run(main_coro)
            else:
                uvloop.run(main_coro)
        if hec is not None:
            print(
                f"audit sink: {len(hec.records)} records received by the HEC receiver in {hec.requests} POSTs"
            )
            hec.stop()
        if args.profile:
            import pstats

            pstats.Stats(args.profile).sort_stats("tottime").print_stats(30)


async def _run(
    args: argparse.Namespace, upstream_port: int, runtime_port: int, pids: tuple[int, int], rss_idle: float
) -> None:
    upstream_pid, pid = pids
    messages = [{"role": "user", "content": PROMPT}]
    chat = {"model": "fake-model", "messages": messages, "max_tokens": 64}
    direct = {
        "complete": _request_bytes(upstream_port, "/v1/chat/completions", {**chat, "stream": False}, API_KEY),
        "stream": _request_bytes(
            upstream_port,
            "/v1/chat/completions",
            {**chat, "stream": True, "stream_options": {"include_usage": True}},
            API_KEY,
        ),
    }
    direct["assist"] = direct["ws"] = direct["stream"]
    through: dict[str, Payload | PerWorker] = {
        "complete": _request_bytes(
            runtime_port, "/v1/chat/completions", {**chat, "stream": False}, args.caller
        ),
        "stream": _request_bytes(runtime_port, "/v1/chat/completions", {**chat, "stream": True}, args.caller),
        "assist": _request_bytes(
            runtime_port,
            "/assist",
            {
                "query": {"id": "01JBENCH0000000000000000000", "prompt": PROMPT},
                # No activity_id: no stored history, so the upstream prompt is the same as direct.
                "session": {
                    "processor_id": "bench",
                    "request_id": "r",
                    "interactions": [],
                },
            },
            args.caller,
        ),
    }
    if args.sessions:
        # One conversation per client connection: load its history, append the new exchange.
        through["assist"] = tuple(
            _request_bytes(
                runtime_port,
                "/assist",
                {
                    "query": {"id": "01JBENCH0000000000000000000", "prompt": PROMPT},
                    "session": {
                        "processor_id": "bench",
                        "activity_id": f"bench-session-{i}",
                        "request_id": "r",
                        "interactions": [],
                    },
                },
                args.caller,
            )
            for i in range(max(args.concurrency))
        )
    # The same /assist body, sent as the first message of a /ws connection.
    through["ws"] = through["assist"]
    sent: dict[str, Payload | PerWorker] = dict(through)
    if args.cache == "miss":
        # Distinct prompts (of the same length), so that every request misses the cache.
        sent = {
            mode: _variants(payload) if isinstance(payload, bytes) else payload
            for mode, payload in through.items()
        }
    print(
        f"loadavg before: {os.getloadavg()[0]:.2f} (2-core machine shared with other work; figures are noisy)"
    )
    print(
        f"runtime RSS after start: {rss_idle:.1f} MB; guardrails {'on' if args.guardrails else 'off'};"
        f" balance {args.balance or 'off'};"
        f" sessions {args.sessions or 'off (no activity id)'};"
        f" response cache {args.cache}; rate limit {args.rate_limit}; budgets {'on' if args.budgets else 'off'};"
        f" caller credential: {args.auth}; roles {'on' if args.roles else 'off'}; audit {args.audit};"
        f" tracing {args.tracing}" + (f" (sampling {args.sampling_ratio:g})" if args.tracing != "off" else "")
    )
    header = (
        f"{'mode':<9}{'c':>4} | {'direct p50':>10} {'p99':>8} {'req/s':>8} | {'runtime p50':>11} {'p99':>8}"
        f" {'req/s':>8} | {'added p50':>9} {'added p99':>9} {'p50 x':>6} {'rps x':>6} {'err':>4}"
        f" | {'CPU/req':>8} {'1-core cap':>10} {'upstream CPU/req':>16}"
    )
    print(header)
    print("-" * len(header))
    for mode in args.modes:
        for c in args.concurrency:
            up0 = _cpu_seconds(upstream_pid)
            d = await _measure(upstream_port, direct[mode], c, args.seconds, args.warmup)
            d_done = len(d.latencies) + d.warm_count
            # What serving the same request costs the fake upstream (Starlette on uvicorn): a floor.
            up_per_req = (_cpu_seconds(upstream_pid) - up0) / d_done if d_done else float("nan")
            cpu0 = _cpu_seconds(pid)
            r = await _measure(runtime_port, sent[mode], c, args.seconds, args.warmup, mode == "ws")
            # CPU the runtime spent per request (warm-up requests included in both terms):
            # robust to other load on the machine, unlike wall-clock figures.
            done = len(r.latencies) + r.warm_count
            cpu_per_req = (_cpu_seconds(pid) - cpu0) / done if done else float("nan")
            print(
                f"{mode:<9}{c:>4} | {d.pct(0.5):>8.2f}ms {d.pct(0.99):>6.2f}ms {d.rps:>8.0f} |"
                f" {r.pct(0.5):>9.2f}ms {r.pct(0.99):>6.2f}ms {r.rps:>8.0f} |"
                f" {r.pct(0.5) - d.pct(0.5):>7.2f}ms {r.pct(0.99) - d.pct(0.99):>7.2f}ms"
                f" {r.pct(0.5) / d.pct(0.5):>6.2f} {r.rps / d.rps if d.rps else float('nan'):>6.2f}"
                f" {d.errors + r.errors:>4} | {cpu_per_req * 1e6:>6.0f}us {1 / cpu_per_req:>8.0f}/s"
                f" {up_per_req * 1e6:>14.0f}us",
                flush=True,
            )
    rss, peak = _rss_mb(pid)
    print(f"runtime RSS after load: {rss:.1f} MB (peak {peak:.1f} MB)")
    if args.cache != "off":
        print("response cache:", _cache_lookups(args.metrics_port))
    print(f"loadavg after: {os.getloadavg()[0]:.2f}")
    print(
        "CPU/req: runtime CPU seconds per request; 1-core cap = 1 / CPU/req, the req/s one dedicated core allows;"
        " upstream CPU/req: the fake upstream's CPU per direct request (a minimal Starlette/uvicorn server)"
    )


if __name__ == "__main__":
    main()
