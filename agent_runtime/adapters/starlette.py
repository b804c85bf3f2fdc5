"""FastAPI and Starlette: mount an agent as an ASGI sub-application.

::

    from fastapi import FastAPI
    from agent_runtime.adapters.starlette import mount_agent

    app = FastAPI()
    agent = mount_agent(app, "/agent", config_path="runtime.yaml")

Streaming works as in the standalone runtime: the sub-application writes its
server-sent events straight to the ASGI server, no framework response object in
between. FastAPI and Starlette do not forward lifespan events to mounted
applications, so the agent's start and drain are chained to the host app's
lifespan (its own lifespan still runs, inside the agent's).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agent_runtime.adapters.mount import AgentMount, agent_for, agent_paths
from agent_runtime.config import RuntimeConfig


def mount_agent(
    app: Any,
    path: str,
    config: RuntimeConfig | dict[str, Any] | None = None,
    *,
    config_path: Path | str | None = None,
    credentials_dir: Path | str | None = None,
    agent: AgentMount | None = None,
    name: str | None = "sentient-agent",
    serve_metrics_port: bool = False,
) -> AgentMount:
    """Mount an agent at ``path`` of a FastAPI or Starlette ``app`` and tie it to the app's lifespan.

    Give ``agent`` to mount one built already, else a config (object, mapping or file). At
    ``path`` ``/`` the agent answers the runtime's own paths (``/assist``, ``/live``, ``/ready``...)
    next to the host's routes: what a pod run by the operator needs (it probes ``/live`` and
    ``/ready``); ``serve_metrics_port`` serves ``/metrics`` on ``server.metricsPort`` too.
    """
    agent = agent_for(agent, config, config_path, credentials_dir, serve_metrics_port)
    prefix = "/" + path.strip("/")
    if prefix == "/":
        # At the root: the runtime's own paths, each an exact route, so the host's routes (added
        # before or after) are never shadowed by a catch-all mount.
        for route_path in sorted(agent_paths()):
            app.router.add_route(route_path, agent, include_in_schema=False)
    else:
        app.mount(prefix, agent, name=name)
    router = app.router
    inner = router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(host: Any) -> AsyncIterator[Any]:
        async with agent.lifespan(), inner(host) as state:
            yield state

    router.lifespan_context = lifespan
    return agent
