"""Tracing pieces that need no collector: the OTLP URL, the headers file, trace headers on the
wire, and the promise that a runtime without tracing never loads the OpenTelemetry SDK."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner

from agent_runtime.config import AgentInfo, LLMRuntimeConfig, ProviderConfig, TracingConfig, parse_config
from agent_runtime.llm.entries import build_snapshot
from agent_runtime.llm.wire import request_bytes
from agent_runtime.tracing import build_tracing
from agent_runtime.tracing.otel import parse_headers, traces_url
from agent_runtime.tracing.throttle import Throttle
from sentient_operator.build import render_config
from sentient_operator.cli import scaffold
from sentient_operator.cli.main import cli
from tests.test_build_children import make_inputs

REPO = Path(__file__).resolve().parents[1]
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_traces_url_adds_the_signal_path_only_to_a_base_url() -> None:
    assert traces_url("http://otel:4318") == "http://otel:4318/v1/traces"
    assert traces_url("http://otel:4318/") == "http://otel:4318/v1/traces"
    assert traces_url("https://gw.example/otlp/v1/traces") == "https://gw.example/otlp/v1/traces"


def test_headers_file_is_a_json_object_and_bad_ones_are_dropped_without_their_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert parse_headers('{"Authorization": "Bearer s3cret", "x-tenant": "a"}') == {
        "authorization": "Bearer s3cret",
        "x-tenant": "a",
    }
    assert parse_headers(None) == {} and parse_headers("") == {}
    assert parse_headers("not json s3cret") == {}
    assert parse_headers('["s3cret"]') == {}
    assert parse_headers('{"x-a": "ok", "x-b": "bad\\r\\nx-c: s3cret"}') == {"x-a": "ok"}
    assert "s3cret" not in caplog.text


def _entry() -> object:
    config = LLMRuntimeConfig(
        chain=[ProviderConfig(id="ns/p", type="openai", endpoint="http://127.0.0.1:9/v1", model="m")]
    )
    return build_snapshot(config, {}, {}, time.monotonic).entries[0]


def test_trace_headers_go_into_the_cached_head_before_the_length() -> None:
    entry = _entry()
    plain = request_bytes(entry, {"a": 1}, "key", stream=False)  # type: ignore[arg-type]
    traced = request_bytes(
        entry,  # type: ignore[arg-type]
        {"a": 1},
        "key",
        stream=False,
        extra={"traceparent": TRACEPARENT, "tracestate": "v=1"},
    )
    head, _, body = traced.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[-3:] == [b"traceparent: " + TRACEPARENT.encode(), b"tracestate: v=1", b"content-length: 7"]
    assert body == b'{"a":1}'
    # The cached head is untouched: the next untraced request is as before.
    assert request_bytes(entry, {"a": 1}, "key", stream=False) == plain  # type: ignore[arg-type]
    with pytest.raises(httpx.LocalProtocolError):
        request_bytes(entry, {}, "key", stream=False, extra={"tracestate": "a\r\nx: y"})  # type: ignore[arg-type]


def test_tracing_off_builds_nothing() -> None:
    assert build_tracing(None, AgentInfo(name="a"), lambda _: None) is None


def test_tracing_reads_its_headers_file_once_per_build() -> None:
    reads: list[str] = []

    def read(name: str) -> str:
        reads.append(name)
        return '{"authorization": "Bearer t"}'

    config = TracingConfig(endpoint="http://127.0.0.1:9", headers_file="tracing-headers.json")
    tracing = build_tracing(config, AgentInfo(name="a"), read)
    assert tracing is not None and tracing.headers_text == '{"authorization": "Bearer t"}'
    assert reads == ["tracing-headers.json"]


def test_a_runtime_without_tracing_never_imports_the_tracer() -> None:
    # In a fresh interpreter: importing the runtime, its pipeline and failover loop leaves the tracer
    # of the SDK (and our module that wraps it) unloaded: only an agent with tracing loads them.
    code = """
import sys
from agent_runtime.app import create_app
from agent_runtime.llm import LLMManager
assert "agent_runtime.tracing.otel" not in sys.modules, "otel wrapper imported"
assert "opentelemetry.sdk.trace" not in sys.modules, "SDK tracer imported"
print("ok")
"""
    env = {"PYTHONPATH": f"{REPO / 'operator'}:{REPO}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_init_with_tracing_passes_validate_and_renders(tmp_path: Path) -> None:
    runner = CliRunner()
    endpoint = "http://otel-collector.monitoring:4318"
    result = runner.invoke(cli, ["init", "traced", "--tracing", endpoint, "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    checked = runner.invoke(cli, ["validate", str(tmp_path / "agent.yaml")])
    assert checked.exit_code == 0 and ": warning: " not in checked.output, checked.output
    agent = list(yaml.safe_load_all((tmp_path / "agent.yaml").read_text()))[-1]
    assert agent["spec"]["tracing"] == scaffold.starter_tracing(endpoint)
    tracing = parse_config(render_config(make_inputs(tracing=agent["spec"]["tracing"]))[0]).tracing
    assert tracing is not None and (tracing.endpoint, tracing.sampling_ratio) == (endpoint, 0.1)
    assert "tracing" not in scaffold.agent_manifests("plain")[-1]["spec"]


TRACED_AGENT = """\
apiVersion: sentient.dev/v1alpha1
kind: SentientAgent
metadata: {name: a}
spec:
  systemPrompt: You help.
  llm:
    chain:
      - providerRef: {name: p}
  auth: {anonymous: true}
  tracing:
    endpoint: http://otel:4318
    headersSecretRef: {name: otel-auth}
    captureContent: true
"""


def test_validate_warns_of_clear_text_headers_and_captured_content(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(TRACED_AGENT)
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if ": warning: " in line]
    assert [w.split(": warning: ")[0] for w in warnings] == [
        f"{path}:12: spec.tracing.headersSecretRef",
        f"{path}:13: spec.tracing.captureContent",
    ]
    path.write_text(TRACED_AGENT.replace("http://otel", "https://otel").replace("captureContent: true", ""))
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 0 and ": warning: " not in result.output, result.output


def _sdk_warning(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("opentelemetry.sdk._shared_internal", logging.WARNING, "f", 1, msg, args, None)


def test_the_sdk_log_throttle_lets_one_line_of_a_kind_through_per_interval() -> None:
    throttle = Throttle(interval=3600)
    records = [_sdk_warning("Queue full, dropping %s.", "span") for _ in range(5)]
    assert [throttle.filter(r) for r in records] == [True, False, False, False, False]
    assert throttle.filter(_sdk_warning("other"))
    throttle.interval = 0
    again = _sdk_warning("Queue full, dropping %s.", "span")
    assert throttle.filter(again)
    assert again.getMessage() == "Queue full, dropping span. (4 more like this in the last 0 s)"
