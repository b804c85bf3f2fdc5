"""The runtime as an ASGI sub-application under a path prefix."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from functools import cache
from pathlib import Path
from typing import Any

from agent_runtime.app import AgentRuntime, create_app, metrics_app
from agent_runtime.config import RuntimeConfig
from agent_runtime.http import ASGIHandler, Receive, Scope, Send


@cache
def agent_paths() -> frozenset[str]:
    """The runtime's own paths (routes/spec.ROUTES): what an agent mounted at ``/`` answers."""
    from agent_runtime.routes import spec

    return frozenset(route.path for route in spec.ROUTES)


def owns(prefix: str, path: str) -> bool:
    """Whether ``path`` goes to an agent mounted at ``prefix`` (at ``/``: the runtime's paths only)."""
    if prefix == "/":
        return path in agent_paths()
    return path == prefix or path.startswith(prefix + "/")


def route_path(scope: Scope) -> str:
    """The path below the mount point (ASGI: ``path`` holds ``root_path`` as its prefix)."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        rest = path[len(root) :]
        if not rest or rest.startswith("/"):
            return rest or "/"
    return path


class AgentMount:
    """One agent runtime served under a prefix of a host application.

    Build it from a config object, a config file, or an existing runtime, mount
    it where the host framework mounts ASGI applications, and run
    :meth:`lifespan` inside the host's own lifespan (or let the host's server
    send ASGI lifespan events to it). The runtime sees paths relative to the
    mount point: ``/agent/assist`` mounted at ``/agent`` is the runtime's
    ``/assist``, authenticated, limited and measured as in a pod.
    """

    def __init__(
        self,
        config: RuntimeConfig | dict[str, Any] | None = None,
        *,
        config_path: Path | str | None = None,
        credentials_dir: Path | str | None = None,
        runtime: AgentRuntime | None = None,
        serve_metrics_port: bool = False,
        host: str = "0.0.0.0",
    ) -> None:
        if runtime is None:
            if isinstance(config, dict):
                config = RuntimeConfig.model_validate(config)
            runtime = create_app(
                config,
                config_path=Path(config_path) if config_path is not None else None,
                credentials_dir=Path(credentials_dir) if credentials_dir is not None else None,
            )
        self.runtime = runtime
        # In a pod the operator scrapes server.metricsPort: the host app does not serve that port.
        self.serve_metrics_port = serve_metrics_port
        self.host = host
        self._metrics: Any = None
        self._metrics_task: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point: the runtime's routes below the mount point, and its lifespan."""
        if scope["type"] in ("http", "websocket"):
            path = route_path(scope)
            if path != scope["path"]:
                scope = {**scope, "path": path, "raw_path": path.encode("latin-1")}
        await self.runtime(scope, receive, send)

    async def startup(self) -> None:
        """Start the runtime (LLM clients, limiter, sessions, agent, file watchers).

        With ``serve_metrics_port``, ``/metrics`` is also served on ``server.metricsPort`` (when
        set), as ``python -m agent_runtime`` does.
        """
        await self.runtime.startup()
        port = self.runtime.config.server.metrics_port
        if self.serve_metrics_port and port and self._metrics is None:
            from agent_runtime.__main__ import _Server, uvicorn_config

            config = uvicorn_config(metrics_app(), self.host, port, self.runtime.config.server.limits)
            config.lifespan = "off"
            self._metrics = _Server(config)
            self._metrics_task = asyncio.create_task(self._metrics.serve())

    async def shutdown(self) -> None:
        """Drain (readiness false, in-flight streams get ``shutdownGrace``), then stop."""
        if self.runtime.started:
            await self.runtime.drain()
        await self.runtime.shutdown()
        if self._metrics is not None and self._metrics_task is not None:
            self._metrics.should_exit = True
            await self._metrics_task
            self._metrics = self._metrics_task = None

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[AgentMount]:
        """Run the runtime for the duration of the block (use inside the host app's lifespan)."""
        await self.startup()
        try:
            yield self
        finally:
            await self.shutdown()

    @property
    def metrics_app(self) -> ASGIHandler:
        """``/metrics`` alone, for a host that serves metrics on a port of its own.

        With ``server.metricsPort`` 0 the mount serves ``/metrics`` itself.
        """
        return metrics_app()


def agent_for(
    agent: AgentMount | None,
    config: RuntimeConfig | dict[str, Any] | None,
    config_path: Path | str | None,
    credentials_dir: Path | str | None,
    serve_metrics_port: bool,
) -> AgentMount:
    """``agent`` when given, else one built from the config (what every adapter function accepts)."""
    if agent is not None:
        return agent
    return AgentMount(
        config,
        config_path=config_path,
        credentials_dir=credentials_dir,
        serve_metrics_port=serve_metrics_port,
    )


def prefix_dispatcher(prefix: str, agent: AgentMount, app: ASGIHandler) -> ASGIHandler:
    """An ASGI app sending ``prefix`` and below to ``agent`` and the rest to ``app``.

    At ``/`` the agent takes only the runtime's own paths (``/assist``, ``/live``...).

    For hosts without a router that mounts ASGI apps (Django's ASGI handler).
    The lifespan starts and drains the agent; ``app`` gets no lifespan events,
    since Django's handler refuses them.
    """
    prefix = "/" + prefix.strip("/")

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(agent, receive, send)
            return
        if owns(prefix, route_path(scope)):
            root = "" if prefix == "/" else prefix
            await agent({**scope, "root_path": scope.get("root_path", "") + root}, receive, send)
            return
        await app(scope, receive, send)

    return dispatch


async def _lifespan(agent: AgentMount, receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await agent.startup()
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                raise
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await agent.shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
