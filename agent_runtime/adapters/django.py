"""Django: serve an agent next to a Django project, under ASGI (streams natively) or WSGI.

In ``asgi.py`` (uvicorn, daphne, hypercorn)::

    from django.core.asgi import get_asgi_application
    from agent_runtime.adapters.django import asgi_application

    application = asgi_application(get_asgi_application(), "/agent", config_path="runtime.yaml")

In ``wsgi.py`` (gunicorn, mod_wsgi, runserver)::

    from django.core.wsgi import get_wsgi_application
    from agent_runtime.adapters.django import wsgi_application

    application = wsgi_application(get_wsgi_application(), "/agent", config_path="runtime.yaml")

Both put the agent in front of Django's handler: requests under the prefix go
to the runtime and never through Django's middleware, URL resolver or database
connections; everything else goes to Django unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent_runtime.adapters.mount import AgentMount, agent_for, prefix_dispatcher
from agent_runtime.adapters.wsgi import WSGIAgent, WSGIApp, WSGIMount, mount_wsgi
from agent_runtime.config import RuntimeConfig
from agent_runtime.http import ASGIHandler


def asgi_application(
    django_app: ASGIHandler,
    path: str,
    config: RuntimeConfig | dict[str, Any] | None = None,
    *,
    config_path: Path | str | None = None,
    credentials_dir: Path | str | None = None,
    agent: AgentMount | None = None,
    serve_metrics_port: bool = False,
) -> ASGIHandler:
    """Django's ASGI application with an agent at ``path``; the lifespan starts and drains the agent."""
    agent = agent_for(agent, config, config_path, credentials_dir, serve_metrics_port)
    return prefix_dispatcher(path, agent, django_app)


def wsgi_application(
    django_app: WSGIApp,
    path: str,
    config: RuntimeConfig | dict[str, Any] | None = None,
    *,
    config_path: Path | str | None = None,
    credentials_dir: Path | str | None = None,
    agent: AgentMount | None = None,
    serve_metrics_port: bool = False,
) -> WSGIMount:
    """Django's WSGI application with an agent at ``path`` (through the WSGI bridge; ``close()`` drains it)."""
    agent = agent_for(agent, config, config_path, credentials_dir, serve_metrics_port)
    return mount_wsgi(django_app, path, WSGIAgent(agent))
