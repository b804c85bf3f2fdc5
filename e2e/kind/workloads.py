"""What the kind tests run in the cluster besides the operator, and how they talk to it.

- ``restricted_namespace``: a namespace that enforces PodSecurity ``restricted``;
- ``deploy_fake_upstream``: the project's fake OpenAI server (``python -m agent_runtime.testing``)
  from the runtime image, behind a Service, admitted under ``restricted``;
- ``apply_example_agent``: examples/agent.yaml as a user applies it, pointed at that upstream;
- ``stream_chat`` / ``stream_assist``: one streamed request through a port-forward;
- ``in_cluster_client``: a client Pod that streams through the agent's Service for a while and
  reports every failure (Service routing, nothing retried).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from e2e.cluster import Cluster
from e2e.portforward import kubectl_port_forward
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "agent.yaml"
UPSTREAM_PORT = 8900
# The keys of examples/agent.yaml.
EXAMPLE_PROVIDER_KEY = "sk-demo-0123456789abcdef"
EXAMPLE_CALLER_KEY = "sk-agent-alice-0123456789"
AGENT = "assistant"

# A container that passes PodSecurity `restricted` with a read-only root file system.
RESTRICTED_CONTAINER: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def apply(cluster: Cluster, *docs: dict[str, Any], namespace: str | None = None) -> None:
    """Server-side apply of ``docs``."""
    args = ["apply", "--server-side", "--force-conflicts", "--field-manager=sentient-kind-e2e", "-f", "-"]
    if namespace:
        args[1:1] = ["-n", namespace]
    cluster.kubectl(*args, input=yaml.safe_dump_all(docs))


def get(cluster: Cluster, kind: str, name: str, namespace: str) -> dict[str, Any]:
    """One object as a dict (``kubectl get -o json``)."""
    out: dict[str, Any] = json.loads(cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)
    return out


def pods(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    """Pods matching ``selector``."""
    out = cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def ready(pod: dict[str, Any]) -> bool:
    """Whether the pod is Ready and not terminating."""
    if pod["metadata"].get("deletionTimestamp"):
        return False
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", [])
    )


def restricted_namespace(cluster: Cluster, name: str) -> None:
    """Label ``name`` so that the apiserver enforces PodSecurity ``restricted`` on it."""
    cluster.kubectl(
        "label",
        "--overwrite",
        "namespace",
        name,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )


def deploy_fake_upstream(
    cluster: Cluster, namespace: str, image: str, *, latency: float = 0.0, tokens: int | None = None
) -> str:
    """The fake OpenAI upstream as a Deployment + Service ``fake-llm``; returns its endpoint URL."""
    args = [
        "-m",
        "agent_runtime.testing",
        "--kind",
        "openai",
        "--host",
        "0.0.0.0",
        "--port",
        str(UPSTREAM_PORT),
    ]
    args += ["--api-key", EXAMPLE_PROVIDER_KEY, "--latency", str(latency)]
    if tokens is not None:
        args += ["--tokens", str(tokens)]
    container = {
        "command": ["python"],
        "args": args,
        "readinessProbe": {"tcpSocket": {"port": UPSTREAM_PORT}, "periodSeconds": 1},
    }
    _run_service(cluster, namespace, "fake-llm", image, UPSTREAM_PORT, container)
    return f"http://fake-llm.{namespace}.svc:{UPSTREAM_PORT}/v1"


def _run_service(
    cluster: Cluster,
    namespace: str,
    name: str,
    image: str,
    port: int,
    container: dict[str, Any],
    pod: dict[str, Any] | None = None,
) -> None:
    """A one-replica Deployment ``name`` (admitted under ``restricted``) behind a Service of the
    same name on ``port``, rolled out. ``container`` and ``pod`` add to the container and pod specs."""
    labels = {"app": name}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [
                        {
                            "name": name,
                            "image": image,
                            "imagePullPolicy": "IfNotPresent",
                            "ports": [{"name": "http", "containerPort": port}],
                            "securityContext": RESTRICTED_CONTAINER,
                            **container,
                        }
                    ],
                    **(pod or {}),
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": port, "targetPort": "http"}]},
    }
    apply(cluster, deployment, service)
    cluster.kubectl("rollout", "status", "-n", namespace, f"deployment/{name}", "--timeout=120s", timeout=150)


# Limits for tests whose clients stream back to back (the example allows 60 requests a minute).
LOAD_LIMITS = {"requestsPerMinute": 100000, "tokensPerMinute": 100000000, "concurrency": 64}


def example_docs(
    endpoint: str,
    limits: dict[str, int] | None = None,
    provider: dict[str, Any] | None = None,
    **agent_spec: Any,
) -> list[dict[str, Any]]:
    """examples/agent.yaml with the provider's endpoint replaced (policy limits, provider spec
    fields and agent spec fields merged in when given)."""
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    for doc in docs:
        if doc["kind"] == "LLMProvider":
            doc["spec"]["endpoint"] = endpoint
            doc["spec"].update(provider or {})
        if doc["kind"] == "RateLimitPolicy" and limits:
            doc["spec"]["limits"].update(limits)
        if doc["kind"] == "SentientAgent":
            doc["spec"].update(agent_spec)
    return docs


def apply_example_agent(
    cluster: Cluster,
    namespace: str,
    endpoint: str,
    limits: dict[str, int] | None = None,
    provider: dict[str, Any] | None = None,
    **agent_spec: Any,
) -> None:
    """``kubectl apply -f examples/agent.yaml`` (endpoint pointed at the in-cluster fake)."""
    apply(cluster, *example_docs(endpoint, limits, provider, **agent_spec), namespace=namespace)


def wait_agent_ready(cluster: Cluster, namespace: str, name: str = AGENT, timeout: float = 240) -> None:
    """Until the agent's Deployment is rolled out and its pods pass the real /ready probe."""
    wait_for(
        lambda: cluster.kubectl("get", "deployment", name, "-n", namespace, check=False).returncode == 0,
        timeout=timeout,
        what=f"the operator to create deployment/{name}",
    )
    cluster.kubectl(
        "rollout",
        "status",
        "-n",
        namespace,
        f"deployment/{name}",
        f"--timeout={int(timeout)}s",
        timeout=timeout + 30,
    )
    cluster.kubectl(
        "wait",
        "-n",
        namespace,
        f"sentientagent/{name}",
        "--for=condition=Ready",
        "--timeout=120s",
        timeout=150,
    )


def deploy_example(
    cluster: Cluster,
    namespace: str,
    runtime_image: str,
    *,
    limits: dict[str, int] | None = None,
    latency: float = 0.0,
    tokens: int | None = None,
    provider: dict[str, Any] | None = None,
    **agent_spec: Any,
) -> str:
    """The fake upstream, then examples/agent.yaml pointed at it, waited for; returns the endpoint."""
    endpoint = deploy_fake_upstream(cluster, namespace, runtime_image, latency=latency, tokens=tokens)
    apply_example_agent(cluster, namespace, endpoint, limits, provider, **agent_spec)
    wait_agent_ready(cluster, namespace)
    return endpoint


def agent_pods(cluster: Cluster, namespace: str, name: str = AGENT) -> list[dict[str, Any]]:
    """The agent's pods (the operator labels them with the instance name)."""
    return pods(cluster, namespace, f"app.kubernetes.io/instance={name}")


# --------------------------------------------------------------------------------------------
# clients


def parse_sse(text: str) -> list[tuple[str, str]]:
    """``(event, data)`` records of a server-sent-events body (event defaults to "message")."""
    records: list[tuple[str, str]] = []
    event, data = "message", list[str]()
    for line in text.splitlines():
        if not line:
            if data:
                records.append((event, "\n".join(data)))
            event, data = "message", list[str]()
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
    if data:
        records.append((event, "\n".join(data)))
    return records


def chat_body(prompt: str, stream: bool) -> dict[str, Any]:
    """An OpenAI chat-completions request for the example agent."""
    return {"model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": prompt}]}


def assist_body(prompt: str) -> dict[str, Any]:
    """A Sentient ``/assist`` request (the query id is a ULID)."""
    from ulid import ULID

    return {"query": {"id": str(ULID()), "prompt": prompt}}


@contextmanager
def agent_url(
    cluster: Cluster, namespace: str, resource: str = f"svc/{AGENT}", port: int = 80
) -> Iterator[str]:
    """``kubectl port-forward`` to the agent; yields its base URL on 127.0.0.1."""
    with kubectl_port_forward(cluster, namespace, resource, port, timeout=60) as local:
        yield f"http://127.0.0.1:{local}"


@dataclass
class StreamResult:
    """What one streamed request produced."""

    status: int
    events: list[tuple[str, str]]
    seconds: float
    error: str = ""


def stream_assist(
    url: str, prompt: str, *, key: str = EXAMPLE_CALLER_KEY, timeout: float = 120
) -> StreamResult:
    """POST /assist and read the whole event stream."""
    started = time.monotonic()
    body = ""
    try:
        with (
            httpx.Client(timeout=timeout) as http,
            http.stream(
                "POST",
                f"{url}/assist",
                json=assist_body(prompt),
                headers={"x-api-key": key, "accept": "text/event-stream"},
            ) as resp,
        ):
            for chunk in resp.iter_text():
                body += chunk
            return StreamResult(resp.status_code, parse_sse(body), time.monotonic() - started)
    except httpx.HTTPError as exc:
        return StreamResult(0, parse_sse(body), time.monotonic() - started, f"{type(exc).__name__}: {exc}")


# The in-cluster client: streams chat completions through the Service, one request after another,
# never retrying, until /stop/now exists (stop_in_cluster_client) or for at most DURATION seconds;
# prints one JSON summary line. Runs in the runtime image.
CLIENT_SCRIPT = """
import json, os, sys, time
import httpx
url, key, duration = sys.argv[1], sys.argv[2], float(sys.argv[3])
body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "count to ten please"}]}
ok, failures, first_error = 0, 0, ""
deadline = time.monotonic() + duration
with httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0), limits=httpx.Limits(max_keepalive_connections=0)) as http:
    while time.monotonic() < deadline and not os.path.exists("/stop/now"):
        try:
            with http.stream("POST", url + "/v1/chat/completions", json=body, headers={"authorization": "Bearer " + key}) as r:
                text = "".join(r.iter_text())
            if r.status_code == 200 and "[DONE]" in text:
                ok += 1
                continue
            failures += 1
            first_error = first_error or f"status {r.status_code}: {text[-200:]}"
        except httpx.HTTPError as exc:
            failures += 1
            first_error = first_error or f"{type(exc).__name__}: {exc}"
        time.sleep(0.05)
print(json.dumps({"ok": ok, "failures": failures, "first_error": first_error}), flush=True)
"""


def start_in_cluster_client(
    cluster: Cluster, namespace: str, image: str, seconds: float, *, service: str = AGENT
) -> str:
    """Start the client Pod (restricted, read-only root); returns its name."""
    name = f"client-{uuid.uuid4().hex[:6]}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "kind-e2e-client"}},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "client",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python", "-c", CLIENT_SCRIPT],
                    "args": [f"http://{service}.{namespace}.svc", EXAMPLE_CALLER_KEY, str(seconds)],
                    "securityContext": RESTRICTED_CONTAINER,
                    "volumeMounts": [{"name": "stop", "mountPath": "/stop"}],
                }
            ],
            "volumes": [{"name": "stop", "emptyDir": {}}],
        },
    }
    apply(cluster, pod)
    wait_for(
        lambda: (
            get(cluster, "pod", name, namespace)["status"].get("phase") in ("Running", "Succeeded", "Failed")
        ),
        timeout=60,
        what=f"client pod {name} to start",
    )
    return name


def client_summary(cluster: Cluster, namespace: str, name: str, timeout: float) -> dict[str, Any]:
    """Tell the client Pod to stop, wait for it to finish and return its summary line."""
    cluster.kubectl("exec", "-n", namespace, name, "--", "python", "-c", "open('/stop/now', 'w').close()")
    wait_for(
        lambda: get(cluster, "pod", name, namespace)["status"].get("phase") in ("Succeeded", "Failed"),
        timeout=timeout,
        interval=1.0,
        what=f"client pod {name} to finish",
    )
    logs = cluster.kubectl("logs", "-n", namespace, name).stdout.strip().splitlines()
    assert logs, f"client pod {name} printed nothing"
    summary: dict[str, Any] = json.loads(logs[-1])
    return summary


def fake_upstream_state(cluster: Cluster, namespace: str) -> dict[str, Any]:
    """The fake upstream's counters (``GET /_admin/state`` through a port-forward)."""
    with kubectl_port_forward(cluster, namespace, "svc/fake-llm", UPSTREAM_PORT) as local:
        state: dict[str, Any] = httpx.get(f"http://127.0.0.1:{local}/_admin/state", timeout=10).json()
        return state


@contextmanager
def fake_upstream_admin(cluster: Cluster, namespace: str) -> Iterator[str]:
    """Base URL of the fake upstream's admin API, kept open for a while."""
    with kubectl_port_forward(cluster, namespace, "svc/fake-llm", UPSTREAM_PORT) as local:
        yield f"http://127.0.0.1:{local}"


# --------------------------------------------------------------------------------------------
# OpenBao (Vault API) in the cluster

OPENBAO_PORT = 8200


def deploy_openbao(cluster: Cluster, namespace: str, image: str, root_token: str) -> str:
    """An OpenBao dev server (in memory, KV v2 at ``secret/``) as a Deployment + Service
    ``openbao``, admitted under ``restricted``; returns its in-cluster address."""
    container = {
        "args": [
            "server",
            "-dev",
            f"-dev-root-token-id={root_token}",
            f"-dev-listen-address=0.0.0.0:{OPENBAO_PORT}",
            "-dev-no-store-token",
        ],
        # The dev server writes a token helper file into HOME.
        "env": [{"name": "HOME", "value": "/tmp"}],
        "readinessProbe": {"httpGet": {"path": "/v1/sys/health", "port": OPENBAO_PORT}, "periodSeconds": 1},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    pod = {
        # The image has no non-root user of its own.
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    _run_service(cluster, namespace, "openbao", image, OPENBAO_PORT, container, pod)
    return f"http://openbao.{namespace}.svc:{OPENBAO_PORT}"


@contextmanager
def openbao_api(cluster: Cluster, namespace: str) -> Iterator[str]:
    """Base URL of the in-cluster OpenBao through a port-forward."""
    with kubectl_port_forward(cluster, namespace, "svc/openbao", OPENBAO_PORT, timeout=60) as local:
        yield f"http://127.0.0.1:{local}"
