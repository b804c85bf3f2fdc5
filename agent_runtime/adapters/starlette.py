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

from agent_runtime.adapters.mount import AgentMount
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
) -> AgentMount:
    """Mount an agent at ``path`` of a FastAPI or Starlette ``app`` and tie it to the app's lifespan.

    Give ``agent`` to mount one built already, else a config (object, mapping or file).
    """
    agent = agent or AgentMount(config, config_path=config_path, credentials_dir=credentials_dir)
    app.mount("/" + path.strip("/"), agent, name=name)
    router = app.router
    inner = router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(host: Any) -> AsyncIterator[Any]:
        async with agent.lifespan(), inner(host) as state:
            yield state

    router.lifespan_context = lifespan
    return agent
