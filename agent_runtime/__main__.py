"""``python -m agent_runtime``: serve the agent described by ``SENTIENT_CONFIG``.

Runs one uvicorn server for the API (``server.port``) and one for
``/metrics`` (``server.metricsPort``) in the same event loop. On SIGTERM (or
SIGINT): readiness turns false and new requests get 503 at once, in-flight
streams get until ``server.shutdownGrace`` to finish (then they are ended with
``error`` + ``done``), then both servers stop and the process exits 0.

With ``server.workers`` > 1 this process is a supervisor of that many such
processes sharing the API port (``agent_runtime/workers.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Generator
from typing import TYPE_CHECKING

import uvicorn

from agent_runtime.config import ServerConfig, ServerLimits, config_path, credentials_dir, load_config
from agent_runtime.http.exchange import MAX_BODY_BYTES
from agent_runtime.http.limits import ConnectionLimits, limited_protocol
from agent_runtime.logging import setup_logging
from agent_runtime.workers import follow_supervisor, metrics_asgi, reuse_port_socket, supervise, worker_index

if TYPE_CHECKING:
    # Imported when a runtime is built: a supervisor of workers never loads the app (~20 MB less).
    from agent_runtime.app import AgentRuntime

log = logging.getLogger("agent_runtime.main")


class _Server(uvicorn.Server):
    """A uvicorn server whose signals are handled by :func:`serve` (drain first, then exit)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Leave signal handling to :func:`serve`."""
        yield


def uvicorn_config(app: object, host: str, port: int, limits: ServerLimits) -> uvicorn.Config:
    """The uvicorn settings of one of the runtime's servers, with ``limits`` on slow clients."""
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        # httptools, with deadlines and size bounds on the request (http/limits.py); the
        # idle keep-alive time is one of them.
        http=limited_protocol(ConnectionLimits.from_config(limits)),
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        # The client address (audit records) is the TCP peer's: uvicorn would otherwise take
        # X-Forwarded-For from any peer on 127.0.0.1 (a port-forward, a sidecar), letting a
        # caller write any address it likes into the audit log.
        proxy_headers=False,
        # A /ws body is one message of at most the HTTP body limit: a larger frame is refused
        # (1009) as it arrives instead of being buffered whole (16 MiB by default) first.
        ws_max_size=MAX_BODY_BYTES,
        # Our own drain has already waited for streams when uvicorn shuts down.
        timeout_graceful_shutdown=5,
    )


async def serve(runtime: AgentRuntime, host: str = "0.0.0.0", *, worker: int | None = None) -> None:
    """Run the API and metrics servers until a signal, then drain and stop.

    A worker (``worker`` set: ``server.workers`` > 1) binds the API port with SO_REUSEPORT
    beside the other workers, and leaves the metrics port to its supervisor (workers.py).
    """
    server_config = runtime.config.server
    main = _Server(uvicorn_config(runtime, host, server_config.port, server_config.limits))
    servers = [main]
    sockets = [reuse_port_socket(host, server_config.port)] if worker is not None else None
    if server_config.metrics_port and worker is None:
        servers.append(metrics_server(host, server_config))

    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    background: set[asyncio.Task[None]] = set()

    async def stop() -> None:
        await runtime.drain()
        for server in servers:
            server.should_exit = True

    def on_signal(sig: signal.Signals) -> None:
        if stopping.is_set():
            # A second signal: stop waiting.
            for server in servers:
                server.force_exit = True
                server.should_exit = True
            return
        stopping.set()
        log.info("received %s; draining", sig.name)
        task = loop.create_task(stop())
        background.add(task)
        task.add_done_callback(background.discard)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await asyncio.gather(main.serve(sockets=sockets), *(server.serve() for server in servers[1:]))
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def metrics_server(host: str, server_config: ServerConfig, *, supervisor: bool = False) -> _Server:
    """The server of ``server.metricsPort``: ``/metrics`` only, no lifespan.

    A supervisor serves its workers' summed series with a plain handler (workers.py)."""
    app: object = metrics_asgi
    if not supervisor:
        from agent_runtime.app import metrics_app

        app = metrics_app()
    server = _Server(uvicorn_config(app, host, server_config.metrics_port, server_config.limits))
    server.config.lifespan = "off"
    return server


def tune_gc() -> None:
    """Fewer, cheaper garbage collections: 3-4% of the CPU of a request went to them.

    What exists once the runtime is loaded (modules, pydantic schemas, the config) lives as
    long as the process: ``gc.freeze()`` keeps it out of every later collection. A request
    allocates a few hundred container objects, nearly all freed by reference counting;
    the default threshold (700) still ran a young collection every other request.
    """
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def main() -> None:
    """Entry point of ``python -m agent_runtime`` and ``sentient-runtime``."""
    setup_logging()
    host = os.environ.get("SENTIENT_HOST", "0.0.0.0")
    worker = worker_index()
    try:
        path = config_path()
        config = load_config(path)
        if worker is None and config.server.workers > 1:
            # The supervisor: it starts the workers (this command again) and serves no API itself.
            server_config = config.server
            factory = (
                (lambda: metrics_server(host, server_config, supervisor=True))
                if server_config.metrics_port
                else None
            )
            sys.exit(supervise(config, factory))
        from agent_runtime.app import create_app

        # SENTIENT_DEV=1 is set by `sentient dev` alone: the capture bus for its dashboard.
        dev = os.environ.get("SENTIENT_DEV") == "1"
        runtime = create_app(config, config_path=path, credentials_dir=credentials_dir(), dev=dev)
    except Exception as exc:
        log.error("cannot load the runtime config: %s", exc)
        sys.exit(2)
    if worker is not None:
        follow_supervisor()
    audit_path = os.environ.get("SENTIENT_AUDIT_LOG")
    if audit_path or worker is not None:
        from agent_runtime.audit import open_audit_log, worker_audit_path

        key_file = runtime.config.audit_key_file
        key = runtime.credentials.read(key_file) if key_file else None
        if audit_path and worker is not None:
            audit_path = worker_audit_path(audit_path, worker)
        runtime.audit = open_audit_log(key, audit_path, worker=worker)
    tune_gc()
    try:
        import uvloop

        uvloop.run(serve(runtime, host, worker=worker))
    except ImportError:
        asyncio.run(serve(runtime, host, worker=worker))


if __name__ == "__main__":
    main()
