"""Audit sinks end to end: spec.audit applied to the apiserver, the token and CA bound by the
operator, rendered into the runtime config and the pod's spool volume; a runtime fed with exactly
the ConfigMap and Secret the operator wrote ships refused requests to a Splunk-HEC receiver and to
a real rsyslogd over TLS, and both copies verify with the agent's audit key."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_runtime.audit import verify
from agent_runtime.testing import run_fake
from agent_runtime.testing.hec_receiver import HECReceiver
from e2e.agent_pod import AgentPod
from e2e.agents import PROVIDER_KEY, agent, callers, provider, wait_ready
from e2e.operator_proc import running_operator
from e2e.resources import apply, get
from tests.support.rsyslog import Rsyslog, gtls_available
from tests.support.tls import make_self_signed
from tests.support.waiting import wait_for

HEC_TOKEN = "hec-e2e-token"


@pytest.fixture
def fake_upstream() -> Any:
    with run_fake("openai", api_key=PROVIDER_KEY) as fake:
        yield fake


def _failures(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("event") == "auth.failure"]


def test_audit_sinks_rendered_bound_and_shipped(
    cluster: Any, crds: list[str], k8s: Any, namespace: str, fake_upstream: Any, tmp_path: Path
) -> None:
    tls = gtls_available()
    cert, key = make_self_signed(tmp_path / "tls")
    rsyslog = Rsyslog(tls=(cert, key) if tls else None).start()
    hec = HECReceiver(token=HEC_TOKEN).start()
    syslog: dict[str, Any] = {
        "address": rsyslog.tls_address if tls else rsyslog.address,
        "structuredData": True,
    }
    if tls:
        syslog["tls"] = {"caSecretRef": {"name": "siem", "key": "ca.crt"}}
    siem = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "siem", "namespace": namespace},
        "stringData": {"hecToken": HEC_TOKEN, "ca.crt": cert.read_text()},
    }
    audit = {
        "sinks": [
            {"name": "rsyslog", "syslog": syslog, "maxBufferMiB": 8},
            {
                "name": "splunk",
                "http": {"url": hec.url, "tokenSecretRef": {"name": "siem", "key": "hecToken"}},
            },
        ]
    }
    try:
        with running_operator(cluster, namespace):
            apply(
                cluster,
                *provider(namespace, fake_upstream.endpoint),
                callers(namespace),
                siem,
                agent(namespace, audit=audit),
            )
            wait_ready(cluster, namespace)
            deployment = get(cluster, "deployment", "helper", namespace)
            assert deployment is not None
            volumes = deployment["spec"]["template"]["spec"]["volumes"]
            assert {"name": "audit-spool", "emptyDir": {"sizeLimit": f"{8 + 64 + 16}Mi"}} in volumes
            bound = get(cluster, "secret", "helper-credentials", namespace)
            assert bound is not None
            audit_key = base64.b64decode(bound["data"]["audit-key"])
            assert base64.b64decode(bound["data"]["audit-sink-splunk-token"]).decode() == HEC_TOKEN
            with AgentPod(k8s, namespace, "helper", tmp_path / "pod") as pod:
                pod.wait_ready()
                for _ in range(5):
                    refused = httpx.post(
                        f"{pod.url}/v1/chat/completions", headers={"x-api-key": "wrong"}, json={}
                    )
                    assert refused.status_code == 401
                wait_for(
                    lambda: len(_failures(hec.records)) == 5, "the refusals at the HEC receiver", timeout=60
                )
                wait_for(
                    lambda: len(_failures([json.loads(line) for line in rsyslog.lines()])) == 5,
                    "the refusals in rsyslog's file",
                    timeout=60,
                )
                syslog_lines = rsyslog.lines()
    finally:
        hec.stop()
        rsyslog.cleanup()
    assert verify((json.dumps(r) for r in hec.records), audit_key).ok
    assert verify(syslog_lines, audit_key).ok
    assert hec.events[0]["sourcetype"] == "sentient:audit"
