"""An agent mounted in FastAPI, Starlette, Flask and Django (ASGI and WSGI), each served by a real
server on 127.0.0.1: the host app's own routes still answer, and under the mount the runtime's
protocol streams, authenticates, rate-limits and counts exactly as the standalone runtime does."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import httpx
import pytest
import uvicorn

from agent_runtime.adapters import AgentMount
from agent_runtime.testing import FakeUpstream, run_fake
from tests.support.net import free_port
from tests.support.runtime import RuntimeFiles, chain_entry, default_credentials, make_config

KEY = {"X-API-Key": "alice-secret-key"}
PROMPT = "one two three four five six"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    """An upstream that streams one word per chunk, slowly enough for several network reads."""
    with run_fake("openai", latency=0.03) as upstream:
        yield upstream


@pytest.fixture
def agent(fake: FakeUpstream, tmp_path: Path) -> AgentMount:
    """A runtime built from a config (API keys, a rate limit of 2 requests a minute per key)."""
    return _agent(fake, tmp_path)


def _agent(fake: FakeUpstream, tmp_path: Path, metrics_port: int = 0) -> AgentMount:
    config = make_config(
        metrics_port=metrics_port,
        chain=[chain_entry(fake)],
        rate_limit={
            "policy": "default/adapters",
            "limits": {"requestsPerMinute": 2},
            "countBy": "apiKey",
            "backend": {"type": "memory"},
        },
    )
    files = RuntimeFiles(tmp_path, config, default_credentials())
    return AgentMount(
        config, credentials_dir=files.credentials_dir.path, serve_metrics_port=bool(metrics_port)
    )


class Served:
    """An ASGI app under uvicorn (lifespan on) in a thread."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, lifespan="on", log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.01)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)


class ServedWSGI:
    """A WSGI app under a real WSGI server in a thread (Werkzeug's, threaded, or the stdlib's)."""

    def __init__(self, app: Callable[..., Any], *, werkzeug: bool = True) -> None:
        self.port = free_port()
        if werkzeug:
            from werkzeug.serving import make_server as werkzeug_server

            self.server: Any = werkzeug_server("127.0.0.1", self.port, app, threaded=True)
        else:
            self.server = make_server("127.0.0.1", self.port, app, handler_class=_QuietHandler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(20)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def check_agent(base: str, prefix: str = "/agent", metrics_url: str | None = None) -> None:
    """The runtime's behaviour under ``prefix``: streamed /assist, auth, rate limit, health, metrics."""
    reads = 0
    events: list[dict[str, Any]] = []
    with httpx.stream(
        "POST",
        f"{base}{prefix}/assist",
        json={"query": {"id": "q1", "prompt": PROMPT}},
        headers=KEY,
        timeout=30,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        buffer = b""
        for chunk in response.iter_raw():
            reads += 1
            buffer += chunk
    for block in buffer.decode().split("\n\n"):
        data = [line[6:] for line in block.splitlines() if line.startswith("data: ")]
        if data:
            events.append(json.loads(data[0]))
    assert events[-1]["content_type"] == "atomic.done"
    text = "".join(e["content"] for e in events if e["content_type"] == "chunked.text")
    assert text == f"Echo: {PROMPT}"
    # Streamed as the upstream produced words, not buffered into one body.
    assert reads >= 3, reads
    anonymous = httpx.post(f"{base}{prefix}/assist", json={"query": {"id": "q", "prompt": "x"}}, timeout=30)
    assert anonymous.status_code == 401
    assert "atomic.error" in anonymous.text and "atomic.done" in anonymous.text
    # The policy allows 2 a minute: the third (after the streamed one) is refused.
    codes = [
        httpx.post(
            f"{base}{prefix}/assist", json={"query": {"id": "q", "prompt": "x"}}, headers=KEY, timeout=30
        ).status_code
        for _ in range(3)
    ]
    assert 429 in codes, codes
    assert httpx.get(f"{base}{prefix}/live", timeout=10).status_code == 200
    assert httpx.get(f"{base}{prefix}/nowhere", timeout=10).status_code == 404
    if prefix:
        # At the root FastAPI's own /openapi.json, registered first, wins (see docs/frameworks/fastapi.md).
        assert httpx.get(f"{base}{prefix}/openapi.json", timeout=10).json()["paths"]["/assist"]
    metrics = httpx.get(metrics_url or f"{base}{prefix}/metrics", timeout=10).text
    assert 'sentient_requests_total{route="/assist",status="200"}' in metrics
    assert 'route="/assist",status="429"' in metrics


def test_fastapi(agent: AgentMount) -> None:
    from fastapi import FastAPI

    from agent_runtime.adapters.starlette import mount_agent

    app = FastAPI()

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "from fastapi"}

    mount_agent(app, "/agent", agent=agent)
    with Served(app) as base:
        assert agent.runtime.started
        assert httpx.get(f"{base}/hello", timeout=10).json() == {"hello": "from fastapi"}
        check_agent(base)
    # The host's lifespan ended: the agent drained and stopped.
    assert not agent.runtime.started and agent.runtime.draining


def test_fastapi_at_the_root_as_in_a_pod(fake: FakeUpstream, tmp_path: Path) -> None:
    """At ``/``: the runtime's paths next to the host's (before and after), metrics on their own port."""
    from fastapi import FastAPI

    from agent_runtime.adapters.starlette import mount_agent

    metrics_port = free_port()
    agent = _agent(fake, tmp_path, metrics_port)
    app = FastAPI()

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "before"}

    mount_agent(app, "/", agent=agent)

    @app.get("/later")
    def later() -> dict[str, str]:
        return {"hello": "after"}

    with Served(app) as base:
        assert httpx.get(f"{base}/hello", timeout=10).json() == {"hello": "before"}
        assert httpx.get(f"{base}/later", timeout=10).json() == {"hello": "after"}
        assert httpx.get(f"{base}/ready", timeout=10).status_code == 200
        assert httpx.get(f"{base}/metrics", timeout=10).status_code == 404
        check_agent(base, "", metrics_url=f"http://127.0.0.1:{metrics_port}/metrics")
    assert not agent.runtime.started


def test_flask_at_the_root(agent: AgentMount) -> None:
    from flask import Flask

    from agent_runtime.adapters.flask import mount_agent

    app = Flask("host")

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "from flask"}

    bridge = mount_agent(app, "/", agent=agent)
    try:
        with ServedWSGI(app) as base:
            assert httpx.get(f"{base}/hello", timeout=10).json() == {"hello": "from flask"}
            check_agent(base, "")
    finally:
        bridge.close()


def test_starlette_keeps_its_own_lifespan(agent: AgentMount) -> None:
    import contextlib

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from agent_runtime.adapters.starlette import mount_agent

    seen: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        seen.append("start")
        yield
        seen.append("stop")

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    app = Starlette(routes=[Route("/hello", hello)], lifespan=lifespan)
    mount_agent(app, "/agent", agent=agent)
    with Served(app) as base:
        assert httpx.get(f"{base}/hello", timeout=10).text == "hello"
        check_agent(base)
    assert seen == ["start", "stop"]


def test_flask(agent: AgentMount) -> None:
    from flask import Flask

    from agent_runtime.adapters.flask import mount_agent

    app = Flask("host")

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "from flask"}

    bridge = mount_agent(app, "/agent", agent=agent)
    try:
        with ServedWSGI(app) as base:
            assert httpx.get(f"{base}/hello", timeout=10).json() == {"hello": "from flask"}
            check_agent(base)
    finally:
        bridge.close()
    assert not agent.runtime.started


def test_flask_under_an_asgi_server(agent: AgentMount) -> None:
    """The other way for Flask (docs/frameworks/flask.md): asgiref's WsgiToAsgi behind the agent."""
    from asgiref.wsgi import WsgiToAsgi
    from flask import Flask

    from agent_runtime.adapters.mount import prefix_dispatcher

    app = Flask("host")

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "from flask"}

    with Served(prefix_dispatcher("/agent", agent, WsgiToAsgi(app))) as base:
        assert httpx.get(f"{base}/hello", timeout=10).json() == {"hello": "from flask"}
        check_agent(base)
    assert not agent.runtime.started


def test_wsgi_client_gone_mid_stream_cancels_the_agent(fake: FakeUpstream, agent: AgentMount) -> None:
    from flask import Flask

    from agent_runtime.adapters.flask import mount_agent

    app = Flask("host")
    bridge = mount_agent(app, "/agent", agent=agent)
    long_prompt = " ".join(f"w{i}" for i in range(200))
    try:
        with ServedWSGI(app) as base:
            with httpx.stream(
                "POST",
                f"{base}/agent/assist",
                json={"query": {"id": "q", "prompt": long_prompt}},
                headers=KEY,
            ) as response:
                next(response.iter_raw())
            # The runtime notices at its next write and ends the request: nothing stays in flight.
            deadline = time.monotonic() + 15
            while agent.runtime.in_flight and time.monotonic() < deadline:
                time.sleep(0.05)
            assert agent.runtime.in_flight == 0
    finally:
        bridge.close()


@pytest.fixture(scope="module")
def django_settings() -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="adapters-test-only",
            ROOT_URLCONF=__name__,
            ALLOWED_HOSTS=["127.0.0.1", "localhost"],
            INSTALLED_APPS=[],
            DATABASES={},
            MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
        )
        django.setup()


def _django_hello(request: Any) -> Any:
    from django.http import JsonResponse

    return JsonResponse({"hello": "from django"})


def __getattr__(name: str) -> Any:
    # Django's URL resolver reads ``urlpatterns`` from ROOT_URLCONF (this module) lazily.
    if name == "urlpatterns":
        from django.urls import path

        return [path("hello", _django_hello)]
    raise AttributeError(name)


def test_django_asgi(django_settings: None, agent: AgentMount) -> None:
    from django.core.asgi import get_asgi_application

    from agent_runtime.adapters.django import asgi_application

    app = asgi_application(get_asgi_application(), "/agent", agent=agent)
    with Served(app) as base:
        assert httpx.get(f"{base}/hello", timeout=10).json() == {"hello": "from django"}
        check_agent(base)
    assert not agent.runtime.started


def test_django_wsgi(django_settings: None, agent: AgentMount) -> None:
    from django.core.wsgi import get_wsgi_application

    from agent_runtime.adapters.django import wsgi_application

    app = wsgi_application(get_wsgi_application(), "/agent", agent=agent)
    # The standard library's WSGI server: one thread, HTTP/1.0, still streaming.
    try:
        with ServedWSGI(app, werkzeug=False) as base:
            assert httpx.get(f"{base}/hello", timeout=10).json() == {"hello": "from django"}
            check_agent(base)
    finally:
        app.close()
    assert not agent.runtime.started


def test_mount_sees_paths_below_its_prefix() -> None:
    from agent_runtime.adapters.mount import route_path

    assert route_path({"path": "/agent/assist", "root_path": "/agent"}) == "/assist"
    assert route_path({"path": "/agent", "root_path": "/agent"}) == "/"
    assert route_path({"path": "/agents/assist", "root_path": "/agent"}) == "/agents/assist"
    assert route_path({"path": "/assist", "root_path": ""}) == "/assist"
