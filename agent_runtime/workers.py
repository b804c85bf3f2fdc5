"""More than one server process per pod (``server.workers``): a supervisor and its workers.

One Python process serves from one core. With ``server.workers`` = N > 1,
``python -m agent_runtime`` becomes a small supervisor that starts N workers
(the same command, told their index by ``SENTIENT_WORKER``) and serves nothing
of the API itself:

- Each worker binds the API port with ``SO_REUSEPORT``: the kernel spreads new
  connections evenly over the workers' listening sockets (no shared accept
  queue, so no thundering herd), and a worker is the same code as a single
  process: routes, pipeline, drain, reload.
- Nothing is shared between workers but what is shared between replicas: Redis
  keeps rate limits and sessions exact; the memory backends are per process
  (a limit counted in memory admits up to N times the limit, a memory session
  lives in the worker that created it), as they are per replica.
- Metrics: every worker writes its series to files (prometheus_client's
  multiprocess mode, in a private directory under ``$TMPDIR``); ``/metrics``
  (the supervisor on ``server.metricsPort``, or any worker on the API port
  when there is no metrics port) sums them. One scrape target per pod and the
  same series as with one process, which per-worker ports would not give
  (N targets, a ServiceMonitor that depends on N, sums left to every query).
- SIGTERM (or SIGINT) is passed to every worker: each drains as a single
  process does (readiness false, in-flight requests get ``server.shutdownGrace``)
  and exits; the supervisor exits 0 when all have. A second signal is passed on
  too (the workers stop waiting). A worker still alive after the grace plus a
  margin is killed.
- A worker that dies while the supervisor is not stopping is started again,
  after a delay that doubles with each early death (1 s up to 30 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST

from agent_runtime.config import RuntimeConfig, duration_seconds
from agent_runtime.metrics import MULTIPROCESS_ENV, exposition

log = logging.getLogger("agent_runtime.workers")

WORKER_ENV = "SENTIENT_WORKER"
PR_SET_PDEATHSIG = 1
# Time a stopping worker gets beyond the grace (uvicorn's own shutdown, the audit record).
STOP_MARGIN = 5.0
RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0
# A worker that lived this long before dying starts again after the shortest delay.
HEALTHY_AFTER = 60.0


def worker_index() -> int | None:
    """This process's worker index when a supervisor started it, else None."""
    value = os.environ.get(WORKER_ENV)
    return int(value) if value and value.isdigit() else None


def follow_supervisor() -> None:
    """In a worker: drain and stop (SIGTERM) when the supervisor dies, even by SIGKILL (Linux)."""
    supervisor = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:
        # It died before the request above took effect.
        os.kill(os.getpid(), signal.SIGTERM)


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port) that other workers may bind too (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Server(Protocol):
    """What the supervisor needs of the metrics port's server (a uvicorn.Server)."""

    should_exit: bool

    async def serve(self) -> None:
        """Serve until ``should_exit``."""


async def metrics_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The supervisor's metrics port: ``GET /metrics``, every worker's series summed."""
    if scope["type"] != "http":
        return
    if scope["path"] != "/metrics":
        status, content_type, body = 404, b"text/plain; charset=utf-8", b"Not Found"
    else:
        status, content_type, body = 200, CONTENT_TYPE_LATEST.encode(), exposition()
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body if scope["method"] != "HEAD" else b""})


@dataclass(slots=True)
class _Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    delay: float = RESTART_DELAY
    exits: int = 0
    waiter: asyncio.Task[int] | None = field(default=None, repr=False)


class Supervisor:
    """Starts ``server.workers`` runtime processes, restarts them, serves their summed metrics."""

    def __init__(self, config: RuntimeConfig, metrics_server: Callable[[], Server] | None) -> None:
        self.config = config
        # Builds the server of the metrics port (None: no metrics port, the workers serve /metrics).
        self._metrics_server_factory = metrics_server
        self.count = config.server.workers
        self.grace = duration_seconds(config.server.shutdown_grace)
        self.stopping = False
        self._workers = [_Worker(i) for i in range(self.count)]
        self._directory = ""
        self._wake = asyncio.Event()

    async def run(self) -> int:
        """Run until a signal and every worker has exited; returns the exit code."""
        self._directory = tempfile.mkdtemp(prefix="sentient-metrics-")
        # Read by metrics.exposition() in this process (the metrics port) and by the workers'
        # prometheus_client at import (multiprocess mode).
        os.environ[MULTIPROCESS_ENV] = self._directory
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        factory = self._metrics_server_factory
        metrics_server = factory() if factory is not None else None
        metrics_task = loop.create_task(metrics_server.serve()) if metrics_server is not None else None
        try:
            for worker in self._workers:
                await self._start(worker)
            log.info("supervisor started", extra={"workers": self.count, "pid": os.getpid()})
            await self._supervise()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if metrics_server is not None and metrics_task is not None:
                metrics_server.should_exit = True
                with contextlib.suppress(Exception):
                    await metrics_task
            shutil.rmtree(self._directory, ignore_errors=True)
        return 0

    async def _start(self, worker: _Worker) -> None:
        env = {**os.environ, WORKER_ENV: str(worker.index), MULTIPROCESS_ENV: self._directory}
        # A session of its own: a signal to the supervisor's process group (Ctrl-C in a terminal,
        # kill -- -PGID) reaches the workers once, through the supervisor, not twice (the second
        # signal would cut their drain short).
        worker.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent_runtime", env=env, start_new_session=True
        )
        worker.started = time.monotonic()
        worker.waiter = asyncio.get_running_loop().create_task(worker.process.wait())
        worker.waiter.add_done_callback(lambda _: self._wake.set())

    async def _supervise(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            for worker in self._workers:
                if worker.waiter is None or not worker.waiter.done() or worker.process is None:
                    continue
                code = worker.waiter.result()
                pid = worker.process.pid
                worker.waiter = None
                self._forget(pid)
                if self.stopping:
                    log.info("worker stopped", extra={"worker": worker.index, "code": code})
                    continue
                lived = time.monotonic() - worker.started
                worker.delay = RESTART_DELAY if lived > HEALTHY_AFTER else worker.delay
                log.error(
                    "worker exited; starting it again",
                    extra={"worker": worker.index, "code": code, "restart_in": worker.delay},
                )
                worker.exits += 1
                asyncio.get_running_loop().create_task(self._restart(worker, worker.delay))
                worker.delay = min(worker.delay * 2, MAX_RESTART_DELAY)
            if self.stopping and all(w.waiter is None for w in self._workers):
                return

    async def _restart(self, worker: _Worker, delay: float) -> None:
        await asyncio.sleep(delay)
        if not self.stopping:
            await self._start(worker)

    def _forget(self, pid: int) -> None:
        """Drop a dead worker's live gauges (its counters and histograms keep counting in the sums)."""
        from prometheus_client import multiprocess

        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid, self._directory)

    def _on_signal(self, sig: signal.Signals) -> None:
        first = not self.stopping
        self.stopping = True
        log.info("received %s; stopping the workers", sig.name)
        for worker in self._workers:
            process = worker.process
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(sig)
        if first:
            asyncio.get_running_loop().call_later(self.grace + STOP_MARGIN, self._kill_stragglers)
        self._wake.set()

    def _kill_stragglers(self) -> None:
        for worker in self._workers:
            process = worker.process
            if process is not None and process.returncode is None:
                log.error("worker did not stop in time; killing it", extra={"worker": worker.index})
                with contextlib.suppress(ProcessLookupError):
                    process.kill()


def supervise(config: RuntimeConfig, metrics_server: Callable[[], Server] | None) -> int:
    """Run the supervisor in its own event loop; returns the process exit code."""
    return asyncio.run(Supervisor(config, metrics_server).run())
