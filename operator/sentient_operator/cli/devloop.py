"""The ``sentient dev`` loop: warm runtime workers behind an inspecting proxy, reloaded on change.

::

    caller -> proxy (--port, prints every request and its events) -> worker N (python -m agent_runtime)
                                                                  <- spare worker N+1, imports done

Why one module of this size: the proxy, the worker pool and the file watcher share one
event loop and one generation counter; it is the whole of `sentient dev`'s loop.

On a change the spare receives the new generation's config, and once it
answers ``/live`` the proxy points at it and the old worker drains (SIGTERM:
its in-flight streams finish). A generation that fails to start leaves the
previous one serving. Every process listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import click
import httpx
import uvicorn

import agent_runtime
import sentient_operator
from agent_runtime import protocol
from agent_runtime.client import SSEParser
from agent_runtime.config import AUDIT_KEY_FILE, ServerLimits, dump_config
from agent_runtime.http.limits import ConnectionLimits, limited_protocol
from agent_runtime.logging import accept_request_id
from sentient_operator.cli.dev import Plan, watched_files
from sentient_operator.cli.devui.feed import follow
from sentient_operator.cli.devui.hub import Hub
from sentient_operator.cli.devui.routes import PREFIX as DASHBOARD_PREFIX
from sentient_operator.cli.devui.routes import Dashboard
from sentient_operator.cli.errors import CliError
from sentient_operator.cli.progress import Progress

Planner = Callable[[int], Plan]
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host", "content-length"}


def free_port() -> int:
    """A 127.0.0.1 port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _excerpt(text: str, limit: int = 100) -> str:
    text = text.replace("\n", "⏎")
    return json.dumps(text if len(text) <= limit else text[: limit - 1] + "…", ensure_ascii=False)


class Inspector:
    """Prints one request and its Sentient events as they stream through the proxy."""

    def __init__(
        self, method: str, path: str, request_id: str, body: bytes, echo: Callable[[str], None]
    ) -> None:
        self.echo = echo
        self.started = time.monotonic()
        self.parser = SSEParser()
        self.events = 0
        self.path = path
        self._buffer = b""
        detail = ""
        if path == "/assist":
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                data = json.loads(body)
                detail = f" prompt={_excerpt(str(data['query']['prompt']))}"
                session = data.get("session") or {}
                if session.get("activity_id"):
                    turns = len(session.get("interactions") or [])
                    detail += f" activity={session['activity_id']} turns={turns}"
        elif path.startswith("/v1/chat/completions"):
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                data = json.loads(body)
                detail = f" model={data.get('model')} stream={bool(data.get('stream'))} messages={len(data.get('messages') or [])}"
        self.echo(click.style(f"→ {method} {path} [{request_id}]{detail}", fg="blue", bold=True))

    def feed(self, chunk: bytes) -> None:
        """Bytes of the response body (SSE of /assist is decoded and printed event by event)."""
        if self.path != "/assist":
            return
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            record = self.parser.feed(raw.decode("utf-8", "replace").rstrip("\r"))
            if record is not None:
                self._event(record[1])

    def _event(self, data: str) -> None:
        self.events += 1
        at = f"+{time.monotonic() - self.started:6.3f}s"
        try:
            event = json.loads(data)
        except ValueError:
            self.echo(f"  {at} ← (not JSON) {_excerpt(data)}")
            return
        kind = event.get("content_type")
        name = event.get("event_name", "?")
        meta = f" {json.dumps(event['metadata'], ensure_ascii=False)}" if event.get("metadata") else ""
        if kind == protocol.TEXT_STREAM:
            what = "end" if event.get("is_complete") else "chunk"
            body = _excerpt(event.get("content", "")) if event.get("content") else ""
            line = f"  {at} ← {name} {what} {body}{meta}"
        elif kind == protocol.JSON:
            line = f"  {at} ← {name} json {json.dumps(event.get('content'), ensure_ascii=False)[:200]}{meta}"
        elif kind == protocol.TEXTBLOCK:
            line = f"  {at} ← {name} text {_excerpt(event.get('content', ''))}{meta}"
        elif kind == protocol.ERROR:
            content = event.get("content") or {}
            line = click.style(
                f"  {at} ← error {content.get('error_code')}: {content.get('error_message')}", fg="red"
            )
        elif kind == protocol.DONE:
            line = f"  {at} ← done"
        else:
            line = f"  {at} ← {kind} {name}"
        self.echo(line)

    def finish(self, status: int, note: str = "") -> None:
        """The response ended."""
        took = time.monotonic() - self.started
        events = f", {self.events} events" if self.path == "/assist" else ""
        color = "green" if status < 400 else "red"
        self.echo(click.style(f"← {status} in {took * 1000:.0f} ms{events}{note}", fg=color))


@dataclass
class Generation:
    """Files of one rendered config."""

    number: int
    directory: Path
    config: Path
    credentials: Path
    audit_log: Path
    port: int


class Worker:
    """One runtime process: a warm spare until :meth:`go`, then a server on ``port``."""

    def __init__(self, proc: asyncio.subprocess.Process, label: str, echo_err: Callable[[str], None]) -> None:
        self.proc = proc
        self.label = label
        self.echo_err = echo_err
        self.warm = asyncio.Event()
        self.generation: Generation | None = None
        self.output: list[str] = []
        self._pumps = [
            asyncio.ensure_future(self._pump(proc.stdout, first_warm=True)),
            asyncio.ensure_future(self._pump(proc.stderr, first_warm=False)),
        ]

    async def _pump(self, stream: asyncio.StreamReader | None, *, first_warm: bool) -> None:
        if stream is None:
            return
        while True:
            raw = await stream.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip()
            if first_warm and not self.warm.is_set() and line == "warm":
                self.warm.set()
                continue
            self.output = [*self.output[-50:], line]
            self.echo_err(click.style(f"  runtime[{self.label}]│ ", dim=True) + render_runtime_line(line))

    @property
    def url(self) -> str:
        """Base URL of the serving worker."""
        assert self.generation is not None
        return f"http://127.0.0.1:{self.generation.port}"

    async def go(self, generation: Generation) -> None:
        """Hand the spare its config; it starts serving on the generation's port."""
        await asyncio.wait_for(self.warm.wait(), timeout=60)
        self.generation = generation
        self.label = f"gen {generation.number}"
        order = {
            "config": str(generation.config),
            "credentials": str(generation.credentials),
            "audit_log": str(generation.audit_log),
            # Each generation its own audit-sink spools: two generations overlap during a swap.
            "audit_spool": str(generation.directory / "audit-spool"),
        }
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(order) + "\n").encode())
        await self.proc.stdin.drain()

    async def wait_live(self, http: httpx.AsyncClient, limit: float) -> bool:
        """Poll ``/live`` until it answers (True) or the process exits / time runs out (False)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                return False
            with contextlib.suppress(httpx.HTTPError):
                response = await http.get(f"{self.url}/live", timeout=1.0)
                if response.status_code == 200:
                    return True
            await asyncio.sleep(0.01)
        return False

    async def stop(self, grace: float = 8.0) -> None:
        """SIGTERM (the runtime drains in-flight streams), SIGKILL after ``grace``."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                if self.proc.stdin is not None and self.generation is None:
                    self.proc.stdin.close()  # a spare exits on EOF
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout=grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        for pump in self._pumps:
            pump.cancel()


class _CurrentLimits:
    """The serving generation's ``server.limits``, read afresh by each new client connection.

    The proxy is the server callers connect to, so it enforces the agent's limits as the
    runtime's own server would; an edit of ``spec.server.limits`` takes effect on reload.
    """

    def __init__(self) -> None:
        self.limits = ConnectionLimits.from_config(ServerLimits())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.limits, name)


class DevLoop:
    """Runs the proxy, the workers and the file watcher until interrupted."""

    def __init__(
        self,
        *,
        planner: Planner,
        target: Path,
        host: str,
        port: int,
        workdir: Path | None,
        inspect: bool,
        cold: bool = False,
        poll_interval: float = 0.05,
        log_level: str = "warning",
    ) -> None:
        self.planner = planner
        self.target = target.resolve()
        self.root = self.target.parent
        self.host = host
        self.port = port
        self.keep_workdir = workdir is not None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="sentient-dev-"))
        self.inspect = inspect
        self.cold = cold
        self.poll_interval = poll_interval
        self.log_level = log_level
        self.current: Worker | None = None
        self.spare: Worker | None = None
        self.generation = 0
        self.reload_times: list[float] = []
        self._python_path: list[str] = []
        self._http: httpx.AsyncClient | None = None
        self._retiring: set[asyncio.Future[None]] = set()
        self._workers: set[Worker] = set()  # every process started, so that none outlives the loop
        self.audit_key = ""
        self.limits = _CurrentLimits()
        # The dashboard under /_dev/: what it shows is gathered here whether or not a page is open.
        self.hub = Hub()
        self.dashboard = Dashboard(self.hub, host)
        self._background: set[asyncio.Future[None]] = set()
        self._changed: list[str] = []

    # ------------------------------------------------------------------ output

    @staticmethod
    def say(message: str, **style: Any) -> None:
        """A status line (stderr)."""
        click.echo(click.style(message, **style) if style else message, err=True)

    @staticmethod
    def show(message: str) -> None:
        """An inspection line (stdout)."""
        click.echo(message)
        sys.stdout.flush()

    # ------------------------------------------------------------------ workers

    def _env(self) -> dict[str, str]:
        roots = {str(Path(agent_runtime.__file__).resolve().parent.parent)}
        roots.add(str(Path(sentient_operator.__file__).resolve().parent.parent))
        existing = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        path = [*self._python_path, *sorted(roots), *existing]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
        env.setdefault("SENTIENT_LOG_LEVEL", self.log_level)
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # stale .pyc of edited files must never win
        return env

    async def _spawn(self) -> Worker:
        args = [sys.executable, "-m", "sentient_operator.cli.devworker"]
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._env(),
            cwd=str(self.root),
        )
        worker = Worker(proc, "spare", self.say)
        self._workers.add(worker)
        return worker

    async def _spawn_cold(self, generation: Generation) -> Worker:
        env = self._env()
        env.update(
            SENTIENT_CONFIG=str(generation.config),
            SENTIENT_CREDENTIALS_DIR=str(generation.credentials),
            SENTIENT_HOST="127.0.0.1",
            SENTIENT_AUDIT_LOG=str(generation.audit_log),
            SENTIENT_AUDIT_SPOOL_DIR=str(generation.directory / "audit-spool"),
            SENTIENT_DEV="1",
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent_runtime",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=str(self.root),
        )
        worker = Worker(proc, f"gen {generation.number}", self.say)
        worker.generation = generation
        self._workers.add(worker)
        return worker

    def _write_generation(self, plan: Plan, port: int) -> Generation:
        self.generation += 1
        directory = self.workdir / f"gen-{self.generation}"
        credentials = directory / "credentials"
        credentials.mkdir(parents=True, mode=0o700)
        files = dict(plan.credentials)
        files.setdefault(AUDIT_KEY_FILE, self.audit_key)
        for name, value in files.items():
            path = credentials / name
            # Credentials are written owner-only: they may hold a real provider key.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(value)
        config = directory / "config.yaml"
        config.write_text(dump_config(plan.config))
        audit_dir = self.workdir / "audit"
        audit_dir.mkdir(exist_ok=True)
        return Generation(
            self.generation, directory, config, credentials, audit_dir / f"gen-{self.generation}.log", port
        )

    async def load(self, changed_at: float | None) -> bool:
        """Render, start a new generation and switch the proxy to it; False (old one kept) on failure."""
        started = time.monotonic()
        port = free_port()
        changed, self._changed = self._changed, []
        try:
            plan = self.planner(port)
        except CliError as exc:
            self.say(f"✗ not reloaded: {exc}", fg="red")
            self.hub.reload(
                None,
                ok=False,
                took=time.monotonic() - started,
                since_edit=None,
                changed=changed,
                error=str(exc),
            )
            return False
        if self.generation == 0:
            for note in plan.notes:
                self.say(f"  {note}", dim=True)
        self._python_path = plan.python_path
        # A None metrics port does not survive the config's wire form (it falls back to 9090,
        # which two generations would fight over), so each generation gets its own.
        server = plan.config.server.model_copy(update={"port": port, "metrics_port": free_port()})
        plan.config = plan.config.model_copy(update={"server": server})
        generation = self._write_generation(plan, port)
        if self.cold:
            worker = await self._spawn_cold(generation)
        else:
            if self.spare is None or self.spare.proc.returncode is not None:
                self.spare = await self._spawn()
            worker, self.spare = self.spare, None
            await worker.go(generation)
        assert self._http is not None
        live = await worker.wait_live(self._http, limit=30)
        if not live:
            await worker.stop(grace=2)
            tail = _last_words(worker.output)
            self.say(
                f"✗ generation {generation.number} did not start{': ' + tail[:300] if tail else ''}", fg="red"
            )
            self.hub.reload(
                generation.number,
                ok=False,
                took=time.monotonic() - started,
                since_edit=None,
                changed=changed,
                error=tail[:300] or "the runtime did not start",
            )
            if self.current is not None:
                self.say(
                    f"  still serving generation {self.current.generation.number if self.current.generation else '?'}",
                    fg="yellow",
                )
            if not self.cold:
                self.spare = await self._spawn()
            return False
        old, self.current = self.current, worker
        self.limits.limits = ConnectionLimits.from_config(plan.config.server.limits)
        took = time.monotonic() - started
        self._dashboard_load(plan, worker, generation.number, took, changed_at, changed)
        if changed_at is not None:
            since_edit = time.time() - changed_at
            self.reload_times.append(since_edit)
            self.say(
                f"↻ reloaded: generation {generation.number} serving {since_edit:.2f} s after the edit "
                f"(start {took:.2f} s)",
                fg="green",
            )
        else:
            self.say(
                f"✓ serving on http://{self.host}:{self.port} (generation {generation.number}, {took:.2f} s); "
                f"dashboard http://{self.host}:{self.port}{DASHBOARD_PREFIX}/",
                fg="green",
            )
        if not self.cold:
            # The next spare warms up while the user edits.
            self.spare = await self._spawn()
        if old is not None:
            task = asyncio.ensure_future(self._retire(old))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        return True

    def _dashboard_load(
        self,
        plan: Plan,
        worker: Worker,
        number: int,
        took: float,
        changed_at: float | None,
        changed: list[str],
    ) -> None:
        """Tell the dashboard about the new generation and follow its runtime's capture bus."""
        since_edit = None if changed_at is None else time.time() - changed_at
        self.hub.set_config(plan.config, plan.notes)
        self.hub.reload(number, ok=True, took=took, since_edit=since_edit, changed=changed)
        assert self._http is not None
        proc = worker.proc
        # The old worker's feed ends with its process (its in-flight requests report until then).
        self._spawn_background(follow(self._http, worker.url, self.hub, lambda: proc.returncode is None))

    def _spawn_background(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _tick(self) -> None:
        """One metric point a second for the dashboard's charts."""
        while True:
            await asyncio.sleep(1.0)
            self.hub.tick()

    async def _retire(self, worker: Worker) -> None:
        await worker.stop()
        self._workers.discard(worker)
        if worker.generation is not None:
            shutil.rmtree(worker.generation.directory, ignore_errors=True)

    # ------------------------------------------------------------------ proxy

    async def proxy(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """ASGI app: forward to the current worker, tee /assist events to the terminal."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["path"] == DASHBOARD_PREFIX or scope["path"].startswith(DASHBOARD_PREFIX + "/"):
            # Dev's own pages: never forwarded (the runtime's /_dev/bus is read by the proxy alone).
            await self.dashboard(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        worker = self.current
        path = scope["path"]
        query = scope.get("query_string", b"").decode()
        headers = [
            (k.decode(), v.decode()) for k, v in scope["headers"] if k.decode().lower() not in _HOP_HEADERS
        ]
        given = next((v for k, v in headers if k.lower() == "x-request-id"), None)
        # The runtime would replace an id it does not accept: the proxy does the same, so that both
        # file the request under one id (the dashboard joins the runtime's events on it).
        request_id = accept_request_id(given) or protocol.new_ulid()
        if given != request_id:
            headers = [(k, v) for k, v in headers if k.lower() != "x-request-id"]
            headers.append(("x-request-id", request_id))
        shown = path not in ("/live", "/ready")
        inspector = (
            Inspector(scope["method"], path + (f"?{query}" if query else ""), request_id, body, self.show)
            if self.inspect and shown
            else None
        )
        hub = self.hub if shown else None
        if hub is not None:
            hub.request_started(
                request_id, scope["method"], path + (f"?{query}" if query else ""), headers, body
            )
        if worker is None:
            message = "the agent is not running: its last load failed (see the sentient dev output)"
            if path == "/assist":
                await _sse_error(send, 503, message)
            else:
                await _plain(send, 503, {"error": message})
            if inspector is not None:
                inspector.finish(503, " (no agent running)")
            if hub is not None:
                hub.request_finished(request_id, 503, "no agent running")
            return
        assert self._http is not None
        request = self._http.build_request(
            scope["method"],
            f"{worker.url}{path}" + (f"?{query}" if query else ""),
            headers=headers,
            content=body,
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            message = f"the runtime is unreachable ({type(exc).__name__})"
            if path == "/assist":
                await _sse_error(send, 502, message)
            else:
                await _plain(send, 502, {"error": message})
            if inspector is not None:
                inspector.finish(502)
            if hub is not None:
                hub.request_finished(request_id, 502, message)
            return
        disconnected = asyncio.Event()

        async def watch_disconnect() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected.set()
                    return

        watcher = asyncio.ensure_future(watch_disconnect())
        note = ""
        if hub is not None:
            hub.response_started(request_id, response.status_code, response.headers.get("content-type", ""))
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (k.encode(), v.encode())
                        for k, v in response.headers.items()
                        if k.lower() not in _HOP_HEADERS
                    ],
                }
            )
            async for chunk in response.aiter_raw():
                if disconnected.is_set():
                    note = " (caller went away)"
                    break
                if inspector is not None:
                    inspector.feed(chunk)
                if hub is not None:
                    hub.response_chunk(request_id, chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            await response.aclose()
            if inspector is not None:
                inspector.finish(response.status_code, note)
            if hub is not None:
                hub.request_finished(request_id, response.status_code, note)

    # ------------------------------------------------------------------ watch

    async def watch(self) -> None:
        """Poll the watched files; on a change (settled for 30 ms) load a new generation."""
        snapshot = watched_files(self.root, self.target)
        interval = self.poll_interval
        while True:
            await asyncio.sleep(interval)
            scan_started = time.monotonic()
            current = watched_files(self.root, self.target)
            # A big tree must not turn polling into a busy loop: scan at most 20% of the time.
            interval = max(self.poll_interval, 4 * (time.monotonic() - scan_started))
            if current == snapshot:
                continue
            # Editors save in several steps (truncate, write, rename); wait until the tree is still.
            while True:
                await asyncio.sleep(0.03)
                settled = watched_files(self.root, self.target)
                if settled == current:
                    break
                current = settled
            changed = [p for p in set(current) | set(snapshot) if current.get(p) != snapshot.get(p)]
            snapshot = current
            mtimes = [current[p][0] for p in changed if p in current]
            changed_at = max(mtimes) / 1e9 if mtimes else time.time()
            names = ", ".join(
                sorted(
                    str(p.relative_to(self.root)) if p.is_relative_to(self.root) else str(p) for p in changed
                )[:5]
            )
            self.say(f"• changed: {names}", dim=True)
            self._changed = names.split(", ")
            await self.load(changed_at)

    async def run(self, ready: Callable[[], None] | None = None) -> None:
        """Serve until cancelled (Ctrl-C), then stop every process and remove the temp dir."""
        from agent_runtime.audit import AuditLog  # noqa: F401  (fail early if the runtime is broken)
        from sentient_operator.cli.dev import new_audit_key

        self.audit_key = new_audit_key()
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=5.0))
        config = uvicorn.Config(
            self.proxy,
            host=self.host,
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            interface="asgi3",
            timeout_graceful_shutdown=3,
            # The agent's server.limits on the callers' connections (duck-typed: read live).
            http=limited_protocol(cast(ConnectionLimits, self.limits)),
        )
        server = _QuietServer(config)
        main_task = asyncio.current_task()
        if main_task is not None:
            # SIGTERM ends the loop like Ctrl-C does, so that the workers are stopped too.
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            await self._http.aclose()
            raise CliError(f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from exc
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        try:
            while not server.started:
                if serving.done():
                    raise CliError(f"cannot serve on {self.host}:{self.port}")
                await asyncio.sleep(0.01)
            self.say(f"sentient dev: {self.target} (workdir {self.workdir})", bold=True)
            with Progress("starting the agent runtime"):
                await self.load(None)
            if ready is not None:
                ready()
            self._spawn_background(self._tick())
            self.say("watching for changes; Ctrl-C to stop", dim=True)
            await self.watch()
        finally:
            self.hub.close()  # the dashboard's live streams end, so the server can stop at once
            server.should_exit = True
            for task in list(self._background):
                task.cancel()
            await asyncio.gather(*(w.stop(grace=5) for w in self._workers), return_exceptions=True)
            await asyncio.gather(*self._retiring, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(serving, timeout=5)
            await self._http.aclose()
            if self.reload_times:
                times = sorted(self.reload_times)
                self.say(
                    f"reloads: {len(times)}, edit→serving median {times[len(times) // 2]:.2f} s, max {times[-1]:.2f} s",
                    dim=True,
                )
            if self.keep_workdir:
                self.say(f"kept {self.workdir} (audit logs in {self.workdir / 'audit'})", dim=True)
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)


def _message(line: str) -> tuple[str, str]:
    """(level, text) of a runtime log line; JSON logs are unpacked so tracebacks read as such."""
    with contextlib.suppress(ValueError, AttributeError):
        record = json.loads(line)
        if isinstance(record, dict) and "msg" in record:
            return str(record.get("level", "")), str(record["msg"])
    return "", line


def _last_words(output: list[str]) -> str:
    """The most telling line of a failed runtime's output: the end of its last traceback, if any."""
    messages = [_message(line)[1].strip() for line in output if line.strip()]
    for text in reversed(messages):
        if "Traceback" in text:
            return text.splitlines()[-1].strip()
    return messages[-1].splitlines()[-1].strip() if messages else ""


def render_runtime_line(line: str) -> str:
    """A runtime log line for the terminal: ``level logger: message`` with real newlines."""
    level, text = _message(line)
    if not level:
        return line
    with contextlib.suppress(ValueError, AttributeError):
        logger = json.loads(line).get("logger", "")
        text = f"{level} {logger}: {text}" if logger else f"{level}: {text}"
    return text.replace("\n", "\n    ")


class _QuietServer(uvicorn.Server):
    """The proxy's server; signals are the dev loop's business (it stops the workers)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Leave signal handling to the dev loop."""
        yield


async def _plain(send: Any, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data, "more_body": False})


async def _sse_error(send: Any, status: int, message: str) -> None:
    data = protocol.error_and_done("sentient-dev", message, status)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", protocol.SSE_CONTENT_TYPE),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data, "more_body": False})
