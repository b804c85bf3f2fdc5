"""The dev dashboard's HTTP side (``/_dev/`` on ``sentient dev``'s port), without a browser.

``sentient dev`` runs as a subprocess against the fake upstreams; the tests read the page,
its JSON endpoints and its server-sent events, as the page's script does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_runtime.client import LineSplitter, SSEParser
from agent_runtime.config import RuntimeConfig
from sentient_operator.cli import scaffold
from sentient_operator.cli.devui.hub import REDACTED, Hub, redact_config, redact_headers
from tests.support.dev_server import Dev, RunDev, dev_servers, edit
from tests.support.waiting import wait_for


@pytest.fixture
def run_dev(tmp_path: Path) -> Iterator[RunDev]:
    yield from dev_servers(tmp_path)


@pytest.fixture
def dev(run_dev: RunDev, tmp_path: Path) -> Dev:
    docs = scaffold.agent_manifests("helper", "openai", "vault")
    (tmp_path / "agent.yaml").write_text(scaffold.dump_documents(docs))
    server = run_dev(["--fake", "--no-inspect"], tmp_path)
    server.wait_for(r"watching for changes")
    return server


class Stream:
    """``GET /_dev/api/stream`` read event by event."""

    def __init__(self, url: str) -> None:
        self._cm = httpx.stream("GET", f"{url}/_dev/api/stream", timeout=httpx.Timeout(15.0))
        self.response = self._cm.__enter__()
        self._texts = self.response.iter_text()
        self._parser, self._splitter = SSEParser(), LineSplitter()
        self._ready: list[tuple[str, Any]] = []

    def next(self) -> tuple[str, Any]:
        while not self._ready:
            for line in self._splitter.feed(next(self._texts)):
                record = self._parser.feed(line)
                if record is not None:
                    self._ready.append((record[0], json.loads(record[1])))
        return self._ready.pop(0)

    def wait(self, name: str, test: Any = lambda data: True, limit: int = 500) -> Any:
        for _ in range(limit):
            event, data = self.next()
            if event == name and test(data):
                return data
        raise AssertionError(f"no {name} event")

    def close(self) -> None:
        self._cm.__exit__(None, None, None)


def _ask(url: str, prompt: str, request_id: str) -> httpx.Response:
    body = {"query": {"id": request_id, "prompt": prompt}}
    return httpx.post(f"{url}/assist", json=body, headers={"x-request-id": request_id}, timeout=10)


@pytest.mark.slow
def test_dashboard_shows_requests_events_metrics_config_and_reloads(dev: Dev, tmp_path: Path) -> None:
    page = httpx.get(f"{dev.url}/_dev/", timeout=5)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/_dev/static/dashboard.js" in page.text
    assert page.headers["x-frame-options"] == "DENY"
    for name in ("dashboard.js", "dashboard.css"):
        assert httpx.get(f"{dev.url}/_dev/static/{name}", timeout=5).status_code == 200
    assert httpx.get(f"{dev.url}/_dev/static/..%2Fhub.py", timeout=5).status_code == 404
    assert httpx.get(f"{dev.url}/_dev", timeout=5).headers["location"] == "/_dev/"

    stream = Stream(dev.url)
    try:
        snapshot = stream.wait("snapshot")
        assert snapshot["generation"] == 1
        assert snapshot["config"]["agent"]["name"] == "helper"
        assert [r["generation"] for r in snapshot["reloads"]] == [1]

        assert _ask(dev.url, "hello dashboard", "dash-1").status_code == 200
        row = stream.wait("request", lambda d: d["request"]["id"] == "dash-1" and d["request"]["done"])

        # The runtime's decisions arrive over its bus, possibly after the proxy saw the end.
        def decided() -> dict[str, Any] | None:
            detail: dict[str, Any] = httpx.get(f"{dev.url}/_dev/api/requests/dash-1", timeout=5).json()
            return detail if detail["caller"] is not None and detail["provider"] is not None else None

        detail = wait_for(decided, "the runtime's decisions on dash-1", timeout=20, interval=0.05)
        assert row["request"]["prompt"] == "hello dashboard"
        assert detail["status"] == 200 and detail["route"] == "/assist"
        assert detail["provider"] == "default/helper-openai" and detail["attempts"] == 1
        assert detail["tokens"]["output"] > 0
        assert detail["caller"]["kind"] == "anonymous"
        assert detail["ratelimit"]["allowed"] is True
        assert json.loads(detail["request"]["body"])["query"]["prompt"] == "hello dashboard"
        names = [e["event"] for e in detail["stream"]]
        assert names[-1] == "done" and "response" in names
        kinds = [e["kind"] for e in detail["runtime"]]
        assert "request.start" in kinds and "attempt" in kinds and "request.end" in kinds

        listed = httpx.get(f"{dev.url}/_dev/api/requests", timeout=5).json()["requests"]
        assert [r["id"] for r in listed] == ["dash-1"]
        assert httpx.get(f"{dev.url}/_dev/api/requests/nope", timeout=5).status_code == 404

        point = stream.wait("metrics", lambda d: d["point"]["breakers"])["point"]
        assert point["breakers"] == {"default/helper-openai": "closed"}
        assert {"rps", "p50", "p95", "p99", "tokens", "errors"} <= set(point)
        assert httpx.get(f"{dev.url}/_dev/api/metrics", timeout=5).json()["metrics"]

        # The effective config: no credential value, the fake upstream key included.
        config = httpx.get(f"{dev.url}/_dev/api/config", timeout=5).json()
        assert "fake-upstream-key" not in json.dumps(config)
        assert config["config"]["llm"]["chain"][0]["id"] == "default/helper-openai"

        # A reload (the agent file touched) is pushed and listed.
        agent = tmp_path / "agent.yaml"
        edit(agent, agent.read_text() + "\n")
        reload = stream.wait("reload", lambda d: d["reload"]["ok"])["reload"]
        assert reload["generation"] == 2 and reload["changed"] == ["agent.yaml"]
        assert reload["since_edit"] is not None
        reloads = httpx.get(f"{dev.url}/_dev/api/reloads", timeout=5).json()["reloads"]
        assert [r["generation"] for r in reloads] == [1, 2]
        # Requests after the reload are filed under the new generation, with the new runtime's events.
        assert _ask(dev.url, "after reload", "dash-2").status_code == 200
        stream.wait("request", lambda d: d["request"]["id"] == "dash-2" and d["request"]["provider"])
        assert httpx.get(f"{dev.url}/_dev/api/requests/dash-2", timeout=5).json()["generation"] == 2
    finally:
        stream.close()


@pytest.mark.slow
def test_dashboard_is_refused_to_other_hosts_and_never_forwarded(dev: Dev) -> None:
    # A page elsewhere reaching 127.0.0.1 through DNS rebinding carries its own Host.
    for path in ("/_dev/", "/_dev/api/requests", "/_dev/api/stream"):
        response = httpx.get(f"{dev.url}{path}", headers={"host": "attacker.example"}, timeout=5)
        assert response.status_code == 403
    assert (
        httpx.get(f"{dev.url}/_dev/api/config", headers={"host": "localhost"}, timeout=5).status_code == 200
    )
    assert httpx.post(f"{dev.url}/_dev/api/requests", timeout=5).status_code == 405
    # The runtime's own capture feed is read by the proxy alone.
    assert httpx.get(f"{dev.url}/_dev/bus", timeout=5).status_code == 404


def test_credentials_are_masked_in_headers_and_config() -> None:
    headers = redact_headers([("authorization", "Bearer sk-1"), ("x-api-key", "k"), ("accept", "*/*")])
    assert headers == {"authorization": REDACTED, "x-api-key": REDACTED, "accept": "*/*"}
    tree = {
        "auth": {"apiKeysFile": "apikeys.json", "jwt": {"secret": "s3", "audience": "a"}},
        "llm": {"chain": [{"id": "p", "credentialFile": "provider.p.apiKey", "apiKey": "sk-live"}]},
        "server": {"maxTokens": 10},
    }
    assert redact_config(tree) == {
        "auth": {"apiKeysFile": "apikeys.json", "jwt": {"secret": REDACTED, "audience": "a"}},
        "llm": {"chain": [{"id": "p", "credentialFile": "provider.p.apiKey", "apiKey": REDACTED}]},
        "server": {"maxTokens": 10},
    }


def test_hub_bounds_and_metrics() -> None:
    hub = Hub()
    config = RuntimeConfig.model_validate(
        {
            "agent": {"name": "a", "namespace": "n"},
            "llm": {
                "chain": [{"id": "n/p", "type": "openai", "endpoint": "http://127.0.0.1:9/v1", "model": "m"}]
            },
        }
    )
    hub.set_config(config, ["note"])
    hub.reload(1, ok=True, took=0.5, since_edit=None, changed=[])
    for n in range(400):
        hub.request_started(f"r{n}", "POST", "/assist", [], b'{"query": {"id": "q", "prompt": "p"}}')
        hub.response_started(f"r{n}", 200, "text/event-stream")
        hub.response_chunk(f"r{n}", b'data: {"a": 1}\n\ndata: {"a"')
        hub.response_chunk(f"r{n}", b": 2}\n\n")
        hub.request_finished(f"r{n}", 200 if n % 2 else 502)
    assert len(hub.requests) == 300 and "r399" in hub.requests and "r0" not in hub.requests
    record = hub.requests["r399"]
    assert [e["data"] for e in record.events] == [{"a": 1}, {"a": 2}]
    hub.runtime_event({"kind": "breaker", "provider": "n/p", "state": "open", "request_id": None})
    point = hub.tick()
    assert point["rps"] == 400 and point["errors"] == 200
    assert point["p50"] is not None and point["p50"] <= point["p99"]
    assert point["breakers"] == {"n/p": "open"}
