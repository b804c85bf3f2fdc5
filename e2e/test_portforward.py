"""``kubectl port-forward`` on the local control plane, through kwok's server, to local processes.

The pods are fakes (kwok); a ``PortForward`` object (``e2e.portforward``) sends what kubectl
forwards to a local server: a tiny HTTP server, then a real agent runtime (``AgentPod``) behind an
operator-made Service, reached with ``sentient chat NAMESPACE/NAME``.
"""

from __future__ import annotations

import http.server
import json
import os
import secrets
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_runtime.testing import run_fake
from e2e.agent_pod import AgentPod
from e2e.agents import CALLER_KEY, PROVIDER_KEY, agent, callers, provider, wait_ready
from e2e.cluster import Cluster
from e2e.operator_proc import running_operator
from e2e.portforward import forward_pods, http_through_port_forward, kubectl_port_forward
from e2e.resources import apply

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _kwok_only(cluster: Cluster) -> None:
    # PortForward objects are kwok's (the local control plane, also when started with `up` and
    # reused through E2E_KUBECONFIG); on kind the pods run and need no redirection.
    if cluster.kubectl("get", "crd", "portforwards.kwok.x-k8s.io", check=False).returncode != 0:
        pytest.skip("no kwok PortForward CRD: not the local control plane")


@pytest.fixture
def local_http() -> Iterator[tuple[int, str]]:
    """An HTTP server on a free 127.0.0.1 port answering every GET with a random token."""
    token = secrets.token_hex(8)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"{token} {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1]), token
    finally:
        server.shutdown()
        server.server_close()


def _deployment_and_service(name: str) -> list[dict[str, Any]]:
    labels = {"app": name}
    container = {"name": "web", "image": "registry.k8s.io/pause:3.10", "ports": [{"containerPort": 8080}]}
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        },
    ]


def test_nodes_point_the_apiserver_at_kwoks_server(cluster: Cluster) -> None:
    nodes = json.loads(cluster.kubectl("get", "nodes", "-l", "type=kwok", "-o", "json").stdout)["items"]
    assert nodes
    ports = {node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] for node in nodes}
    expected = {cluster.local.kubelet_port} if cluster.local is not None else ports
    assert ports == expected and 0 not in ports
    for node in nodes:
        assert {"type": "InternalIP", "address": "127.0.0.1"} in node["status"]["addresses"]


def test_port_forward_to_a_service_reaches_a_local_server(
    cluster: Cluster, namespace: str, local_http: tuple[int, str]
) -> None:
    port, token = local_http
    for doc in _deployment_and_service("web"):
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))
    (forwarded,) = forward_pods(cluster, namespace, "app=web", port)
    assert forwarded.startswith("web-")

    status, body = http_through_port_forward(cluster, namespace, "svc/web", 80, "/hello")
    assert (status, body) == (200, f"{token} /hello")

    # One kubectl carries many connections, one after the other and side by side.
    with kubectl_port_forward(cluster, namespace, "svc/web", 80) as local:

        def get(path: str) -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{local}{path}", timeout=10) as resp:
                return str(resp.read().decode())

        results: dict[int, str] = {}
        threads = [
            threading.Thread(target=lambda i=i: results.__setitem__(i, get(f"/{i}"))) for i in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results == {i: f"{token} /{i}" for i in range(4)}
        assert get("/again") == f"{token} /again"

    # The forward belongs to the pod, so garbage collection removes it with the pod.
    obj = json.loads(cluster.kubectl("get", "portforward", forwarded, "-n", namespace, "-o", "json").stdout)
    assert obj["metadata"]["ownerReferences"][0]["kind"] == "Pod"


def test_sentient_chat_by_name_streams_an_answer_through_the_port_forward(
    cluster: Cluster, crds: list[str], k8s: Any, namespace: str, tmp_path: Path
) -> None:
    with run_fake("openai", api_key=PROVIDER_KEY) as upstream, running_operator(cluster, namespace):
        apply(cluster, *provider(namespace, upstream.endpoint), callers(namespace), agent(namespace))
        wait_ready(cluster, namespace)
        with AgentPod(k8s, namespace, "helper", tmp_path / "pod") as pod:
            pod.wait_ready()
            forward_pods(cluster, namespace, "app.kubernetes.io/instance=helper", pod.port)
            # Through kubectl and kwok to the runtime's readiness endpoint first: the forward is in
            # place before the CLI, which gets a single try, starts its own kubectl.
            status, _ = http_through_port_forward(cluster, namespace, "svc/helper", 80, "/ready")
            assert status == 200

            env = {**os.environ, **cluster.env, "PYTHONPATH": f"{REPO / 'operator'}{os.pathsep}{REPO}"}
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "sentient_operator.cli",
                    "chat",
                    f"{namespace}/helper",
                    "-p",
                    "hello through kwok",
                    "--api-key",
                    CALLER_KEY,
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            # The fake upstream echoes the prompt; the CLI prints the streamed text as it comes.
            assert "Echo: hello through kwok" in done.stdout, done.stdout + done.stderr
            assert CALLER_KEY not in done.stdout + done.stderr
