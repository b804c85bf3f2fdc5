"""Tracing end to end: spec.tracing applied to the apiserver, rendered by the operator into the
ConfigMap, its header Secret bound, and a runtime fed with exactly those files exporting spans to
a real OpenTelemetry Collector that only accepts the token of that Secret."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path
from typing import Any

import httpx
import yaml

from agent_runtime.config import TRACING_HEADERS_FILE
from agent_runtime.testing import run_fake
from e2e.agent_pod import AgentPod
from e2e.agents import CALLER_KEY, PROVIDER_KEY, agent, callers, provider, wait_ready
from e2e.operator_proc import running_operator
from e2e.resources import apply, get
from tests.support.otel_collector import Collector
from tests.support.waiting import wait_for

TOKEN = "otel-e2e-" + secrets.token_hex(8)
SERVER, CLIENT = 2, 3  # OTLP span kinds


def test_tracing_rendered_bound_and_exported(
    cluster: Any, crds: list[str], k8s: Any, namespace: str, tmp_path: Path
) -> None:
    with run_fake("openai", api_key=PROVIDER_KEY) as fake, Collector(token=TOKEN) as collector:
        header_secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "otel-auth", "namespace": namespace},
            "stringData": {"authorization": f"Bearer {TOKEN}"},
        }
        tracing = {"endpoint": collector.endpoint, "headersSecretRef": {"name": "otel-auth"}}
        with running_operator(cluster, namespace):
            apply(
                cluster,
                *provider(namespace, fake.endpoint),
                callers(namespace),
                header_secret,
                agent(namespace, tracing=tracing),
            )
            wait_ready(cluster, namespace)
            config_map = get(cluster, "configmap", "helper-config", namespace)
            assert config_map is not None
            config = yaml.safe_load(config_map["data"]["config.yaml"])
            assert config["tracing"]["endpoint"] == collector.endpoint
            assert config["tracing"]["headersFile"] == TRACING_HEADERS_FILE
            assert TOKEN not in yaml.safe_dump(config)
            bound = get(cluster, "secret", "helper-credentials", namespace)
            assert bound is not None
            assert TOKEN in base64.b64decode(bound["data"][TRACING_HEADERS_FILE]).decode()

            trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
            with AgentPod(k8s, namespace, "helper", tmp_path / "pod") as pod:
                pod.wait_ready()
                response = httpx.post(
                    f"{pod.url}/v1/chat/completions",
                    headers={
                        "Authorization": f"Bearer {CALLER_KEY}",
                        "traceparent": f"00-{trace_id}-{caller_span}-01",
                    },
                    json={"model": "helper", "messages": [{"role": "user", "content": "hello"}]},
                    timeout=30,
                )
                assert response.status_code == 200, response.text
                # The batch processor exports within a second; the collector writes soon after.
                spans = wait_for(
                    lambda: len(found := collector.trace(trace_id)) >= 2 and found,
                    f"the spans of trace {trace_id}",
                    timeout=60,
                )
    [server] = [s for s in spans if s.kind == SERVER]
    [attempt] = [s for s in spans if s.kind == CLIENT]
    assert server.parent_span_id == caller_span
    assert server.resource["service.name"] == "helper"
    assert server.resource["service.namespace"] == namespace
    assert attempt.parent_span_id == server.span_id
    assert attempt.attributes["gen_ai.request.model"] == "fake-model"
    assert attempt.attributes["sentient.provider.id"] == f"{namespace}/fake"
    assert list(fake.state.traceparents) == [f"00-{trace_id}-{attempt.span_id}-01"]
