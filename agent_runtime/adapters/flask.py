"""Flask: mount an agent under a path of a Flask application (WSGI).

::

    from flask import Flask
    from agent_runtime.adapters.flask import mount_agent

    app = Flask(__name__)
    agent = mount_agent(app, "/agent", config_path="runtime.yaml")

The agent is served by the WSGI bridge (:mod:`agent_runtime.adapters.wsgi`)
wrapped around ``app.wsgi_app``: Flask's routing, request context and
middleware never see the agent's requests, and its events stream as the
runtime writes them. Under an ASGI server, serve
``prefix_dispatcher("/agent", agent, WsgiToAsgi(app))`` instead (asgiref).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent_runtime.adapters.mount import AgentMount, agent_for
from agent_runtime.adapters.wsgi import WSGIAgent, mount_wsgi
from agent_runtime.config import RuntimeConfig


def mount_agent(
    app: Any,
    path: str,
    config: RuntimeConfig | dict[str, Any] | None = None,
    *,
    config_path: Path | str | None = None,
    credentials_dir: Path | str | None = None,
    agent: AgentMount | None = None,
    serve_metrics_port: bool = False,
) -> WSGIAgent:
    """Serve an agent at ``path`` of the Flask ``app``; returns the bridge (``close()`` drains it)."""
    agent = agent_for(agent, config, config_path, credentials_dir, serve_metrics_port)
    bridge = WSGIAgent(agent)
    app.wsgi_app = mount_wsgi(app.wsgi_app, path, bridge)
    return bridge
