"""The agent runtime's ASGI application: the lifecycle of one runtime plus its routes.

Requests are dispatched by a dict lookup on the path to a route of
``agent_runtime.routes`` served through the one request pipeline
(``agent_runtime.pipeline``); the lifecycle (``agent_runtime.lifecycle``) runs
on the ASGI lifespan events. No web framework sits in between: Starlette's
request/response objects and middleware would wrap every streamed chunk.
"""

from __future__ import annotations

import logging
import traceback
from functools import partial
from pathlib import Path

from agent_runtime import devbus
from agent_runtime.audit import AuditLog
from agent_runtime.config import RuntimeConfig, load_config
from agent_runtime.http import ASGIHandler, Exchange, Receive, Scope, Send
from agent_runtime.lifecycle import Lifecycle, RuntimeState, load_agent_class
from agent_runtime.pipeline import Pipeline
from agent_runtime.reload import DEFAULT_WATCH_INTERVAL, CredentialFiles
from agent_runtime.routes import dev as dev_routes
from agent_runtime.routes import health, spec, ws

log = logging.getLogger("agent_runtime.app")

__all__ = ["AgentRuntime", "RuntimeState", "create_app", "load_agent_class", "metrics_app"]


class AgentRuntime(Lifecycle):
    """The ASGI application of one agent pod."""

    def __init__(
        self,
        config: RuntimeConfig,
        credentials: CredentialFiles,
        *,
        config_path: Path | None = None,
        audit: AuditLog | None = None,
        watch_interval: float = DEFAULT_WATCH_INTERVAL,
        dev: bool = False,
    ) -> None:
        super().__init__(
            config, credentials, config_path=config_path, audit=audit, watch_interval=watch_interval
        )
        self.metrics_on_main_port = not config.server.metrics_port
        self.pipeline = Pipeline(self)
        # The documented routes (routes/spec.py); /metrics here only when it has no port of its own.
        routes = [r for r in spec.ROUTES if r is not health.METRICS or self.metrics_on_main_port]
        self._routes: dict[str, ASGIHandler] = {route.path: self.pipeline.handler(route) for route in routes}
        if dev:
            # `sentient dev` only: the capture bus and its feed; a production runtime has neither.
            self._routes[dev_routes.PATH] = partial(dev_routes.serve, devbus.enable())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        kind = scope["type"]
        if kind == "http":
            handler = self._routes.get(scope["path"])
            if handler is not None:
                await handler(scope, receive, send)
            else:
                await not_found(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            if scope["path"] == ws.PATH:
                await ws.serve(self.pipeline, scope, receive, send)
            else:
                # Closed before accept: the server refuses the handshake (403).
                await send({"type": "websocket.close", "code": 1000})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception:
                    # The server logs this message: the traceback says why (a missing module, a bad file).
                    await send({"type": "lifespan.startup.failed", "message": traceback.format_exc()})
                    raise
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.shutdown()
                except Exception:
                    await send({"type": "lifespan.shutdown.failed", "message": traceback.format_exc()})
                    raise
                await send({"type": "lifespan.shutdown.complete"})
                return


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """A path the runtime does not serve (not counted: paths are not a bounded label set)."""
    await Exchange(scope, receive, send, "").raw(404, "text/plain; charset=utf-8", b"Not Found")


async def _metrics_only(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] != health.METRICS.path:
        await not_found(scope, receive, send)
        return
    ex = Exchange(scope, receive, send, health.METRICS.path)
    try:
        await health.write_metrics(ex)
    finally:
        ex.finish()


def metrics_app() -> ASGIHandler:
    """The app served on the metrics port."""
    return _metrics_only


def create_app(
    config: RuntimeConfig | None = None,
    *,
    config_path: Path | None = None,
    credentials_dir: Path | None = None,
    audit: AuditLog | None = None,
    watch_interval: float = DEFAULT_WATCH_INTERVAL,
    dev: bool = False,
) -> AgentRuntime:
    """Build the runtime from a config (or the file at ``config_path`` / ``SENTIENT_CONFIG``).

    ``dev`` (``sentient dev`` only) turns on the capture bus and mounts ``/_dev/bus``.
    """
    from agent_runtime.config import config_path as default_config_path
    from agent_runtime.config import credentials_dir as default_credentials_dir

    path = config_path or (None if config is not None else default_config_path())
    if config is None:
        assert path is not None
        config = load_config(path)
    credentials = CredentialFiles(credentials_dir or default_credentials_dir())
    return AgentRuntime(
        config, credentials, config_path=path, audit=audit, watch_interval=watch_interval, dev=dev
    )
