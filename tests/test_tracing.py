"""Tracing through the real runtime into a real OpenTelemetry Collector.

The collector (``tests/support/otel_collector.py``) receives OTLP/HTTP and writes OTLP JSON
lines; the fake upstreams record the ``traceparent`` each upstream request carried. Checked:
the span tree of a request with retries and a failover (one SERVER span, one CLIENT span per
upstream attempt, GenAI attributes), the caller's trace id and the upstream's traceparent, no
content unless ``captureContent``, no secret anywhere in the exported data, sampling, and an
unreachable collector that leaves requests unharmed.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_runtime.config import RuntimeConfig, TracingConfig
from agent_runtime.testing.control import FakeUpstream, Fault, run_fake
from tests.support.otel_collector import Collector, Span
from tests.support.runtime import (
    InProcessRuntime,
    RuntimeFiles,
    chain_entry,
    default_credentials,
    make_config,
)
from tests.support.waiting import wait_for

CALLER_KEY = "alice-secret-key"
KEY = {"authorization": f"Bearer {CALLER_KEY}"}
UPSTREAM_KEY = "sk-upstream-" + "x" * 24
# The collector refuses exports without it: every span read back came with the headers file.
COLLECTOR_TOKEN = "otel-token-" + "y" * 20
HEADERS_FILE = "tracing-headers.json"
HEADERS = json.dumps({"Authorization": f"Bearer {COLLECTOR_TOKEN}"})
PRIMARY_KEY_FILE = "provider.default.primary.apiKey"
SECONDARY_KEY_FILE = "provider.default.secondary.apiKey"
SERVER, CLIENT = 2, 3  # OTLP span kinds
STATUS_ERROR = 2
PROMPT = "What is the tallest mountain?"


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    with Collector(token=COLLECTOR_TOKEN) as running:
        yield running


@pytest.fixture(scope="module")
def primary() -> Iterator[FakeUpstream]:
    with run_fake("openai", api_key=UPSTREAM_KEY) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def secondary() -> Iterator[FakeUpstream]:
    with run_fake("anthropic", api_key=UPSTREAM_KEY) as upstream:
        yield upstream


def _config(primary: FakeUpstream, secondary: FakeUpstream, tracing: dict[str, Any]) -> RuntimeConfig:
    chain = [
        chain_entry(
            primary,
            "default/primary",
            model="primary-model",
            credentialFile=PRIMARY_KEY_FILE,
            retry={"maxAttempts": 2, "initialBackoff": "10ms", "maxBackoff": "20ms"},
        ),
        chain_entry(
            secondary, "default/secondary", model="secondary-model", credentialFile=SECONDARY_KEY_FILE
        ),
    ]
    config = make_config(chain=chain)
    tracing = {"headersFile": HEADERS_FILE, **tracing}
    return config.model_copy(update={"tracing": TracingConfig.model_validate(tracing)})


@contextlib.contextmanager
def _runtime(root: Path, config: RuntimeConfig) -> Iterator[InProcessRuntime]:
    credentials = default_credentials(
        {PRIMARY_KEY_FILE: UPSTREAM_KEY, SECONDARY_KEY_FILE: UPSTREAM_KEY, HEADERS_FILE: HEADERS}
    )
    with InProcessRuntime(RuntimeFiles(root, config, credentials)) as runtime:
        yield runtime


def _traceparent() -> tuple[str, str, str]:
    """A caller's sampled W3C trace context: (header, trace id, parent span id)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def _chat(runtime: InProcessRuntime, headers: dict[str, str], stream: bool = False) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": PROMPT}], "stream": stream}
    return httpx.post(f"{runtime.url}/v1/chat/completions", json=body, headers={**KEY, **headers}, timeout=20)


def _flush(runtime: InProcessRuntime) -> None:
    tracing = runtime.runtime.tracing
    assert tracing is not None
    assert tracing.force_flush()  # type: ignore[attr-defined]


def _wait_trace(collector: Collector, trace_id: str, count: int) -> list[Span]:
    return wait_for(
        lambda: (spans := collector.trace(trace_id)) and len(spans) >= count and spans,
        f"{count} spans of trace {trace_id}",
        timeout=30,
    )


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_failover_span_tree(
    tmp_path: Path, collector: Collector, primary: FakeUpstream, secondary: FakeUpstream, stream: bool
) -> None:
    primary.state.reset()
    secondary.state.reset()
    # The primary fails twice (both of its attempts): the secondary answers.
    primary.state.inject(Fault("status", status=500, count=2))
    header, trace_id, caller_span = _traceparent()
    config = _config(primary, secondary, {"endpoint": collector.endpoint})
    with _runtime(tmp_path, config) as runtime:
        response = _chat(runtime, {"traceparent": header, "tracestate": "vendor=abc"}, stream)
        assert response.status_code == 200, response.text
        _flush(runtime)
    spans = _wait_trace(collector, trace_id, 4)
    servers = [s for s in spans if s.kind == SERVER]
    assert len(servers) == 1
    server = servers[0]
    assert server.parent_span_id == caller_span
    assert server.name == "POST /v1/chat/completions"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["gen_ai.agent.name"] == "test-agent"
    assert server.resource["service.name"] == "test-agent"
    [failover] = [e for e in server.events if e["name"] == "sentient.failover"]
    assert failover["sentient.failover.from"] == "default/primary"
    assert failover["sentient.failover.to"] == "default/secondary"
    assert failover["error.type"] == "5xx"

    attempts = sorted(
        (s for s in spans if s.kind == CLIENT),
        key=lambda s: (s.attributes["sentient.chain.position"], s.attributes["sentient.attempt"]),
    )
    assert [
        (
            s.attributes["sentient.provider.id"],
            s.attributes["sentient.attempt"],
            s.attributes.get("error.type"),
        )
        for s in attempts
    ] == [("default/primary", 1, "5xx"), ("default/primary", 2, "5xx"), ("default/secondary", 1, None)]
    assert all(s.parent_span_id == server.span_id for s in attempts)
    assert [s.status_code for s in attempts] == [STATUS_ERROR, STATUS_ERROR, 0]
    failed, _, answered = attempts
    assert failed.name == "chat primary-model"
    assert failed.attributes["gen_ai.provider.name"] == "openai"
    assert failed.attributes["http.response.status_code"] == 500
    assert answered.name == "chat secondary-model"
    attrs = answered.attributes
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == attrs["gen_ai.system"] == "anthropic"
    assert attrs["gen_ai.request.model"] == "secondary-model"
    assert attrs["gen_ai.response.model"] == "secondary-model"
    assert attrs["gen_ai.usage.input_tokens"] > 0
    assert attrs["gen_ai.usage.output_tokens"] > 0
    assert attrs["gen_ai.response.finish_reasons"] == ["stop"]
    assert attrs["sentient.streamed"] is stream
    assert attrs["server.address"] == "127.0.0.1"

    # Every upstream request carried its own attempt's context, in the caller's trace.
    seen = list(primary.state.traceparents) + list(secondary.state.traceparents)
    assert seen == [f"00-{trace_id}-{s.span_id}-01" for s in attempts]


def test_no_content_and_no_secret_unless_asked(
    tmp_path: Path, collector: Collector, primary: FakeUpstream, secondary: FakeUpstream
) -> None:
    header, trace_id, _ = _traceparent()
    config = _config(primary, secondary, {"endpoint": collector.endpoint})
    with _runtime(tmp_path / "off", config) as runtime:
        assert _chat(runtime, {"traceparent": header}).status_code == 200
        _flush(runtime)
    spans = _wait_trace(collector, trace_id, 2)
    exported = collector.output.read_text()
    for secret in (UPSTREAM_KEY, CALLER_KEY, COLLECTOR_TOKEN):
        assert secret not in exported
    for span in spans:
        assert "gen_ai.input.messages" not in span.attributes
        assert "gen_ai.output.messages" not in span.attributes
    assert PROMPT not in exported and "Echo:" not in exported

    header, trace_id, _ = _traceparent()
    config = _config(primary, secondary, {"endpoint": collector.endpoint, "captureContent": True})
    with _runtime(tmp_path / "on", config) as runtime:
        assert _chat(runtime, {"traceparent": header}).status_code == 200
        _flush(runtime)
    [attempt] = [s for s in _wait_trace(collector, trace_id, 2) if s.kind == CLIENT]
    assert PROMPT in attempt.attributes["gen_ai.input.messages"]
    assert "Echo:" in attempt.attributes["gen_ai.output.messages"]
    assert UPSTREAM_KEY not in collector.output.read_text()


def test_sampling_follows_the_caller_and_the_ratio(
    tmp_path: Path, collector: Collector, primary: FakeUpstream, secondary: FakeUpstream
) -> None:
    primary.state.reset()
    config = _config(primary, secondary, {"endpoint": collector.endpoint, "samplingRatio": 0.0})
    sampled, sampled_id, _ = _traceparent()
    with _runtime(tmp_path, config) as runtime:
        # No caller context, ratio 0: nothing recorded, but the upstream still gets a context.
        assert _chat(runtime, {}).status_code == 200
        # A caller that samples wins over the ratio (parent-based sampling).
        assert _chat(runtime, {"traceparent": sampled}).status_code == 200
        _flush(runtime)
    _wait_trace(collector, sampled_id, 2)
    unsampled, recorded = list(primary.state.traceparents)
    assert unsampled is not None
    _, unsampled_id, _, flags = unsampled.split("-")
    assert int(flags, 16) & 1 == 0  # the sampled flag is off
    assert collector.trace(unsampled_id) == []
    assert recorded is not None and recorded.startswith(f"00-{sampled_id}-")


def test_unreachable_collector_does_not_harm_requests(
    tmp_path: Path, primary: FakeUpstream, secondary: FakeUpstream
) -> None:
    primary.state.reset()
    # A collector that accepts connections and never answers: every export waits its timeout.
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(1)
        port = blackhole.getsockname()[1]
        # An export timeout far above the client's: a request waiting on an export would fail.
        tracing = {"endpoint": f"http://127.0.0.1:{port}", "timeout": "60s", "maxQueueSize": 64}
        with _runtime(tmp_path, _config(primary, secondary, tracing)) as runtime:
            for stream in (False, True) * 50:
                header, _, _ = _traceparent()
                response = _chat(runtime, {"traceparent": header}, stream)
                assert response.status_code == 200
            # A full queue drops spans rather than wait; the upstream still got every context.
            assert sum(p is not None for p in primary.state.traceparents) == 100


def test_a_rotated_header_secret_gets_a_new_exporter(
    tmp_path: Path, collector: Collector, primary: FakeUpstream, secondary: FakeUpstream
) -> None:
    config = _config(primary, secondary, {"endpoint": collector.endpoint})
    with _runtime(tmp_path, config) as runtime:
        first = runtime.runtime.tracing
        assert first is not None and first.headers_text == HEADERS
        rotated = json.dumps({"Authorization": f"Bearer {COLLECTOR_TOKEN}", "x-tenant": "team-a"})
        runtime.files.update_credentials({HEADERS_FILE: rotated})
        tracing = wait_for(
            lambda: (t := runtime.runtime.tracing) is not first and t,
            "a tracer with the rotated headers",
            timeout=30,
        )
        assert tracing.headers_text == rotated
        # The new exporter works (the collector still accepts its token).
        header, trace_id, _ = _traceparent()
        assert _chat(runtime, {"traceparent": header}).status_code == 200
        _flush(runtime)
    _wait_trace(collector, trace_id, 2)
