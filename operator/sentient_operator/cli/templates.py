"""The project templates of ``sentient init --custom``: per web framework and per agent SDK.

A project is an agent class, its test, a Dockerfile, agent.yaml, a README and
``requirements.txt``; with a web framework, also the host application that
mounts the agent (``agent_runtime.adapters``) at ``/``, so the image answers
the operator's probes and the protocol next to the app's own routes. Pure
builders: :func:`project_files` returns ``{path: text}``.

Templates are plain text with ``{placeholders}`` (``str.format``; literal braces
doubled), one constant per file kind. Why one module of this size: the files of
one project are written together and name each other (the test imports the app,
the Dockerfile copies it, the README runs it); split, a change to one template
would reach across modules to keep its siblings in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Framework = Literal["none", "fastapi", "flask", "django"]
Sdk = Literal["sentient", "sentient-agent-framework"]
FRAMEWORKS: tuple[Framework, ...] = ("none", "fastapi", "flask", "django")
SDKS: tuple[Sdk, ...] = ("sentient", "sentient-agent-framework")
# The framework's version this runtime is tested with (tests/test_framework_compat.py).
FRAMEWORK_REQUIREMENT = "sentient-agent-framework==0.3.0"


@dataclass(frozen=True)
class Names:
    """The names a project's files use."""

    name: str
    module: str
    cls: str
    image: str
    base: str


AGENT_SDK = '''"""A custom agent built on the sentient SDK (agent_runtime.sdk).

The runtime imports this class by the ``module:Class`` in agent.yaml
(spec.deployment.agentClass) and calls ``assist`` once per query. Run it
locally with hot reload:  sentient dev {module}.py --fake
"""

from __future__ import annotations

from agent_runtime.llm import ChatMessage, ChatRequest, TextDelta, Usage
from agent_runtime.sdk import AbstractAgent, AgentError, Query, ResponseHandler, Session

SYSTEM_PROMPT = "You are a helpful assistant."


class {cls}(AbstractAgent):
    """Sends a small JSON summary of the request, then streams the model's answer."""

    async def assist(self, session: Session, query: Query, response_handler: ResponseHandler) -> None:
        """Answer one query through the failover chain configured for the agent."""
        if self.context is None or self.context.llm is None:
            raise AgentError("no LLM is configured for this agent", 503)
        history = session.turns()
        await response_handler.emit_json(
            "request", {{"prompt_chars": len(query.prompt), "history_turns": len(history)}}
        )
        messages = [ChatMessage("system", self.context.config.agent.system_prompt or SYSTEM_PROMPT)]
        messages += [ChatMessage(t.role, t.content) for t in history if t.role in ("user", "assistant")]  # type: ignore[arg-type]
        messages.append(ChatMessage("user", query.prompt))
        stream = response_handler.create_text_stream("response")
        answer: list[str] = []
        async for event in self.context.llm.stream(ChatRequest(messages=messages)):
            if isinstance(event, TextDelta) and event.text:
                answer.append(event.text)
                await stream.emit_chunk(event.text)
            elif isinstance(event, Usage):
                # Rate limits are settled with what the model really used.
                response_handler.record_usage(event.input_tokens, event.output_tokens)
        await stream.complete()
        await session.remember(query.prompt, "".join(answer))
        await response_handler.complete()
'''

AGENT_SAF = '''"""A custom agent written against the Sentient Agent Framework (sentient-agent-framework).

It runs unchanged on the sentient runtime, which imports this class by the
``module:Class`` in agent.yaml (spec.deployment.agentClass), builds it as
``{cls}(name)`` and calls ``assist`` once per query, with the framework's own
Query, Session and ResponseHandler. Run it locally:  sentient dev {module}.py --fake
"""

from __future__ import annotations

from sentient_agent_framework import AbstractAgent, ResponseHandler, Session
from sentient_agent_framework.interface.request import Query


class {cls}(AbstractAgent):
    """Sends a small JSON summary of the request, then streams an answer word by word."""

    async def assist(self, session: Session, query: Query, response_handler: ResponseHandler) -> None:
        """Answer one query; call your model here and stream its tokens the same way."""
        interactions = list(session.get_interactions())
        await response_handler.emit_json(
            "request", {{"prompt_chars": len(query.prompt), "history_turns": len(interactions)}}
        )
        stream = response_handler.create_text_stream("response")
        for word in f"Echo: {{query.prompt}}".split(" "):
            await stream.emit_chunk(word if word.startswith("Echo") else " " + word)
        await stream.complete()
        await response_handler.complete()
'''

# The runtime in-process, served through the project's host app (or alone with framework none).
TEST_HEAD = '''"""Runs {cls} inside the real agent runtime{through}, against the fake OpenAI upstream.

No API key and no network: the fake answers "Echo: <prompt>". Run with:  pytest
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent_runtime.testing import run_fake


def runtime_config(endpoint: str) -> dict[str, Any]:
    """runtime.yaml with the fake upstream as the only provider."""
    config: dict[str, Any] = yaml.safe_load(Path(__file__).with_name("runtime.yaml").read_text())
    config["llm"]["chain"][0]["endpoint"] = endpoint
    return config


def events(body: str) -> list[dict[str, Any]]:
    """The JSON of every event of a server-sent-events body."""
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


def check_answer(found: list[dict[str, Any]]) -> None:
    """What {cls} sends for "hello agent": a JSON summary, the streamed answer, done."""
    summary = next(e for e in found if e["content_type"] == "atomic.json")
    assert summary["content"] == {{"prompt_chars": 11, "history_turns": 0}}
    text = "".join(e["content"] for e in found if e["content_type"] == "chunked.text")
    assert text == "Echo: hello agent"
    assert found[-1]["content_type"] == "atomic.done"


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """SENTIENT_CONFIG pointing at a config for a running fake upstream."""
    with run_fake("openai") as fake:
        path = tmp_path / "runtime.yaml"
        path.write_text(yaml.safe_dump(runtime_config(fake.endpoint)))
        monkeypatch.setenv("SENTIENT_CONFIG", str(path))
        monkeypatch.setenv("SENTIENT_CREDENTIALS_DIR", str(tmp_path))
        yield path
'''

TEST_NONE = """

def test_agent_streams_its_answer(config_file: Path) -> None:
    import asyncio

    import httpx

    from agent_runtime.app import create_app

    runtime = create_app(config_path=config_file, credentials_dir=config_file.parent)

    async def ask() -> httpx.Response:
        await runtime.startup()
        try:
            transport = httpx.ASGITransport(app=runtime)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
                return await client.post("/assist", json={"query": {"id": "q1", "prompt": "hello agent"}})
        finally:
            await runtime.shutdown()

    response = asyncio.run(ask())
    assert response.status_code == 200
    check_answer(events(response.text))
"""

TEST_FASTAPI = """

def test_app_serves_its_routes_and_the_agent(config_file: Path) -> None:
    import importlib

    import app as host
    from starlette.testclient import TestClient

    host = importlib.reload(host)  # builds the agent from SENTIENT_CONFIG
    with TestClient(host.app) as client:  # runs the lifespan: the agent starts, then drains
        assert client.get("/hello").json() == {"hello": "world"}
        assert client.get("/ready").status_code == 200
        response = client.post("/assist", json={"query": {"id": "q1", "prompt": "hello agent"}})
    assert response.status_code == 200
    check_answer(events(response.text))
"""

TEST_FLASK = """

def test_app_serves_its_routes_and_the_agent(config_file: Path) -> None:
    import importlib

    import app as host

    host = importlib.reload(host)  # builds the agent from SENTIENT_CONFIG
    client = host.app.test_client()
    try:
        assert client.get("/hello").get_json() == {"hello": "world"}
        assert client.get("/ready").status_code == 200
        response = client.post("/assist", json={"query": {"id": "q1", "prompt": "hello agent"}})
        assert response.status_code == 200
        check_answer(events(response.get_data(as_text=True)))
    finally:
        host.bridge.close()  # drains and stops the agent
"""

TEST_DJANGO = """

def test_project_serves_its_views_and_the_agent(config_file: Path) -> None:
    import asyncio
    import importlib

    import asgi
    import httpx

    asgi = importlib.reload(asgi)  # builds the agent from SENTIENT_CONFIG

    async def run() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        async with asgi.agent.lifespan():  # what the server's lifespan events do
            transport = httpx.ASGITransport(app=asgi.application)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                hello = await client.get("/hello")
                ready = await client.get("/ready")
                answer = await client.post("/assist", json={"query": {"id": "q1", "prompt": "hello agent"}})
                return hello, ready, answer

    hello, ready, answer = asyncio.run(run())
    assert hello.json() == {"hello": "world"}
    assert ready.status_code == 200
    assert answer.status_code == 200
    check_answer(events(answer.text))
"""

APP_FASTAPI = '''"""The host application: your FastAPI service, with the {name} agent mounted in it.

The agent answers the runtime's own paths (/assist, /v1/chat/completions,
/live, /ready, /health...) next to the app's routes, authenticated, rate
limited and measured as the standalone runtime; its config comes from
SENTIENT_CONFIG (the operator mounts it in the pod; runtime.yaml locally).

    uvicorn app:app --port 8080
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from agent_runtime.adapters.starlette import mount_agent

# openapi_url=None: the agent's /openapi.json (the protocol's routes) answers instead of FastAPI's.
app = FastAPI(title="{name}", openapi_url=None)


@app.get("/hello")
def hello() -> dict[str, str]:
    """One of the app's own routes."""
    return {{"hello": "world"}}


agent = mount_agent(
    app,
    "/",
    config_path=os.environ.get("SENTIENT_CONFIG", "runtime.yaml"),
    credentials_dir=os.environ.get("SENTIENT_CREDENTIALS_DIR", "."),
    serve_metrics_port=True,
)
'''

APP_FLASK = '''"""The host application: your Flask service, with the {name} agent mounted in it.

The agent answers the runtime's own paths (/assist, /v1/chat/completions,
/live, /ready, /health...) next to the app's routes, through a WSGI bridge that
streams its events; its config comes from SENTIENT_CONFIG (the operator mounts
it in the pod; runtime.yaml locally).

    flask --app app run --port 8080
"""

from __future__ import annotations

import os

from flask import Flask

from agent_runtime.adapters.flask import mount_agent

app = Flask(__name__)


@app.get("/hello")
def hello() -> dict[str, str]:
    """One of the app's own routes."""
    return {{"hello": "world"}}


bridge = mount_agent(
    app,
    "/",
    config_path=os.environ.get("SENTIENT_CONFIG", "runtime.yaml"),
    credentials_dir=os.environ.get("SENTIENT_CREDENTIALS_DIR", "."),
    serve_metrics_port=True,
)
'''

DJANGO_SETTINGS = '''"""Settings of the {name} Django project (kept minimal: no database, no admin)."""

from __future__ import annotations

import os

DEBUG = False
# Set DJANGO_SECRET_KEY in the Deployment (spec.deployment.env) from a Secret of yours.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-development-key")
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
DATABASES: dict[str, dict[str, str]] = {{}}
USE_TZ = True
'''

DJANGO_URLS = '''"""The project's own views (the agent is served next to them, see asgi.py)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path


def hello(request: HttpRequest) -> JsonResponse:
    """One of the project's own views."""
    return JsonResponse({"hello": "world"})


urlpatterns = [path("hello", hello)]
'''

DJANGO_ASGI = '''"""ASGI entry point: Django with the {name} agent in front of it.

The agent answers the runtime's own paths (/assist, /v1/chat/completions,
/live, /ready, /health...), everything else goes to Django; its config comes
from SENTIENT_CONFIG (the operator mounts it in the pod; runtime.yaml locally).

    uvicorn asgi:application --port 8080
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")

from django.core.asgi import get_asgi_application  # noqa: E402 - after the settings module is named

from agent_runtime.adapters import AgentMount  # noqa: E402
from agent_runtime.adapters.django import asgi_application  # noqa: E402

agent = AgentMount(
    config_path=os.environ.get("SENTIENT_CONFIG", "runtime.yaml"),
    credentials_dir=os.environ.get("SENTIENT_CREDENTIALS_DIR", "."),
    serve_metrics_port=True,
)
application = asgi_application(get_asgi_application(), "/", agent=agent)
'''

DOCKERFILE_NONE = """# Builds on the sentient runtime image: your agent module is the only addition.
# agent.yaml names the class (spec.deployment.agentClass: {module}:{cls}).
FROM {base}
{install}COPY --chown=65532:65532 {module}.py /app/{module}.py
"""

DOCKERFILE_APP = """# Builds on the sentient runtime image (its Python environment, non-root user, /app on PYTHONPATH):
# adds {framework} and the host app; the operator mounts the runtime config and credentials as for
# any agent (SENTIENT_CONFIG, SENTIENT_CREDENTIALS_DIR) and probes /live and /ready on port 8080.
FROM {base}
USER 0
RUN pip install --no-cache-dir {packages}
USER 65532:65532
COPY --chown=65532:65532 {files} /app/
ENTRYPOINT [{entrypoint}]
"""

SERVERS: dict[Framework, tuple[str, str, str]] = {
    # packages, files besides the agent module, entrypoint
    "fastapi": ('"fastapi>=0.115"', "app.py", '"uvicorn", "app:app", "--host", "0.0.0.0", "--port", "8080"'),
    # One process (the metrics port is bound once), a thread per open stream.
    "flask": (
        '"flask>=3.0" "gunicorn>=22"',
        "app.py",
        '"gunicorn", "--workers", "1", "--threads", "32", "--bind", "0.0.0.0:8080", "app:app"',
    ),
    "django": (
        '"django>=5.0"',
        "settings.py urls.py asgi.py",
        '"uvicorn", "asgi:application", "--host", "0.0.0.0", "--port", "8080"',
    ),
}

RUN_LOCALLY: dict[Framework, str] = {
    "none": "sentient dev {module}.py --fake         # http://127.0.0.1:8080; saving the file reloads it",
    "fastapi": "uvicorn app:app --port 8080",
    "flask": "flask --app app run --port 8080",
    "django": "uvicorn asgi:application --port 8080",
}

PROJECT_README = """# {name}

A custom agent for sentient-operator: `{module}.py` holds `{cls}`, {sdk_line}
The agent runtime imports it by `spec.deployment.agentClass: {module}:{cls}` in `agent.yaml`.
{framework_line}
## Test and run it locally

```bash
python -m venv .venv && . .venv/bin/activate
pip install -r requirements.txt         # the runtime and SDK, pytest and httpx{framework_pkg}
pytest                                  # runs the agent in the real runtime against a fake upstream
```

{run_intro}

```bash
{run_locally}
sentient chat http://127.0.0.1:8080     # in {chat_terminal} terminal
```

`runtime.yaml` is the runtime config used locally (in a pod the operator renders it from
`agent.yaml`). From a checkout of sentient-operator instead of the package index, replace
`sentient-operator[...]` in requirements.txt by `/path/to/sentient-operator[...]`.

## Editor support

`agent.yaml` starts with a `yaml-language-server` line naming the JSON Schema of the resources:
VS Code (with the Red Hat YAML extension) and JetBrains IDEs complete and check the fields as you
type. See docs/editors.md of sentient-operator.

## Deploy it

```bash
docker build -t {image} . && docker push {image}
{key_step}
kubectl apply -f agent.yaml
kubectl wait --for=condition=Ready sentientagent/{name}
```

The caller API key is in the Secret `{name}-callers` of `agent.yaml` (key `{key_id}`).
"""


def names(name: str, image: str, base: str) -> Names:
    """Module and class names derived from the agent's name."""
    module = name.replace("-", "_") + "_agent"
    cls = "".join(part.capitalize() for part in name.replace("_", "-").split("-")) + "Agent"
    return Names(name, module, cls, image, base)


def runtime_yaml(n: Names) -> str:
    """A runtime config for local runs: the fake upstream of ``python -m agent_runtime.testing``."""
    return f"""# The runtime config for local runs (in a pod the operator renders it from agent.yaml).
# No caller auth and a fake upstream: python -m agent_runtime.testing --port 8000
configVersion: 1
agent:
  name: {n.name}
  agentClass: {n.module}:{n.cls}
llm:
  chain:
    - id: local/fake
      type: openai
      endpoint: http://127.0.0.1:8000/v1
      model: fake-model
auth:
  anonymous: true
server:
  port: 8080
  metricsPort: 0
"""


def requirements(framework: Framework, sdk: Sdk) -> str:
    """requirements.txt: the runtime with the test tools, the framework, the agent SDK."""
    extras = "test" if framework == "none" else f"test,{framework}"
    lines = [f"sentient-operator[{extras}]"]
    if sdk == "sentient-agent-framework":
        lines.append(FRAMEWORK_REQUIREMENT)
    return "\n".join(lines) + "\n"


def test_file(n: Names, framework: Framework) -> str:
    """The project's test: the agent through the runtime (and the host app)."""
    through = "" if framework == "none" else f", mounted in the {framework.capitalize()} app"
    body = {"none": TEST_NONE, "fastapi": TEST_FASTAPI, "flask": TEST_FLASK, "django": TEST_DJANGO}[framework]
    return TEST_HEAD.format(cls=n.cls, through=through) + body


def dockerfile(n: Names, framework: Framework, sdk: Sdk) -> str:
    """Build on the runtime image; with a framework, run the host app instead of the runtime alone."""
    sdk_install = f'"{FRAMEWORK_REQUIREMENT}"' if sdk == "sentient-agent-framework" else ""
    if framework == "none":
        install = (
            f"USER 0\nRUN pip install --no-cache-dir {sdk_install}\nUSER 65532:65532\n" if sdk_install else ""
        )
        return DOCKERFILE_NONE.format(base=n.base, module=n.module, cls=n.cls, install=install)
    packages, files, entrypoint = SERVERS[framework]
    return DOCKERFILE_APP.format(
        base=n.base,
        framework=framework.capitalize(),
        packages=" ".join(p for p in (packages, sdk_install) if p),
        files=f"{n.module}.py {files}",
        entrypoint=entrypoint,
    )


def app_files(n: Names, framework: Framework) -> dict[str, str]:
    """The host application of a framework template."""
    if framework == "fastapi":
        return {"app.py": APP_FASTAPI.format(name=n.name)}
    if framework == "flask":
        return {"app.py": APP_FLASK.format(name=n.name)}
    if framework == "django":
        return {
            "settings.py": DJANGO_SETTINGS.format(name=n.name),
            "urls.py": DJANGO_URLS,
            "asgi.py": DJANGO_ASGI.format(name=n.name),
        }
    return {}


def readme(n: Names, framework: Framework, sdk: Sdk, key_step: str, key_id: str) -> str:
    """README.md of the project."""
    sdk_line = (
        "written against the Sentient Agent Framework (`sentient-agent-framework`), unchanged."
        if sdk == "sentient-agent-framework"
        else "built on the sentient SDK (`agent_runtime.sdk`)."
    )
    framework_line = (
        ""
        if framework == "none"
        else f"\nThe image runs the {framework.capitalize()} host application "
        f"({', '.join(app_files(n, framework))}) with the agent mounted in it: the runtime's paths "
        "(`/assist`, `/v1/chat/completions`, `/live`, `/ready`...) next to the app's own.\n"
    )
    return PROJECT_README.format(
        name=n.name,
        module=n.module,
        cls=n.cls,
        image=n.image,
        sdk_line=sdk_line,
        framework_line=framework_line,
        framework_pkg="" if framework == "none" else f", {framework.capitalize()}",
        run_locally=RUN_LOCALLY[framework].format(module=n.module),
        # `sentient dev --fake` starts its own fake upstreams; a host app reads runtime.yaml,
        # which points at one on port 8000.
        run_intro="Run it against fake upstreams that `--fake` starts (no API key):"
        if framework == "none"
        else "Run it against a fake upstream (no API key): in one terminal\n"
        "`python -m agent_runtime.testing --port 8000`, in another",
        chat_terminal="another" if framework == "none" else "a third",
        key_step=key_step,
        key_id=key_id,
    )
