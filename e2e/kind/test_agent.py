"""examples/agent.yaml on kind: agent pods from the runtime image, Ready through the real probe,
answering through their Service, admitted under PodSecurity ``restricted``."""

from __future__ import annotations

import json

import httpx

from e2e.cluster import Cluster
from e2e.kind.cluster import KindImages
from e2e.kind.workloads import (
    AGENT,
    EXAMPLE_CALLER_KEY,
    agent_pods,
    agent_url,
    chat_body,
    deploy_example,
    stream_assist,
)


def test_example_agent_answers_through_its_service(
    cluster: Cluster, operator_release: KindImages, crds: list[str], restricted_ns: str
) -> None:
    ns = restricted_ns
    deploy_example(cluster, ns, operator_release.runtime)

    pods = agent_pods(cluster, ns)
    assert pods, "no agent pod"
    for pod in pods:
        container = pod["spec"]["containers"][0]
        assert container["image"] == operator_release.runtime
        # Ready came from the kubelet probing the runtime's /ready.
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
        statuses = pod["status"]["containerStatuses"]
        assert all(s["ready"] and s["restartCount"] == 0 for s in statuses), statuses

    with agent_url(cluster, ns) as url, httpx.Client(timeout=60) as http:
        plain = http.post(
            f"{url}/v1/chat/completions",
            json=chat_body("hello from kind", stream=False),
            headers={"authorization": f"Bearer {EXAMPLE_CALLER_KEY}"},
        )
        assert plain.status_code == 200, plain.text
        assert plain.json()["choices"][0]["message"]["content"]

        streamed = http.post(
            f"{url}/v1/chat/completions",
            json=chat_body("stream it", stream=True),
            headers={"authorization": f"Bearer {EXAMPLE_CALLER_KEY}"},
        )
        assert streamed.status_code == 200
        assert streamed.text.rstrip().endswith("data: [DONE]")

        denied = http.post(f"{url}/v1/chat/completions", json=chat_body("no key", stream=False))
        assert denied.status_code == 401

        result = stream_assist(url, "what is kind?")
        assert result.status == 200, result
        names = [event for event, _ in result.events]
        assert names[-1] == "done", names
        assert "error" not in names, result.events


def test_agent_pod_is_restricted_non_root_read_only(
    cluster: Cluster, operator_release: KindImages, crds: list[str], restricted_ns: str
) -> None:
    ns = restricted_ns
    labels = json.loads(cluster.kubectl("get", "namespace", ns, "-o", "json").stdout)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    deploy_example(cluster, ns, operator_release.runtime)

    pod = agent_pods(cluster, ns)[0]
    name = pod["metadata"]["name"]
    sc = pod["spec"]["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    # What the kernel says, inside the running container: not root, no capability, read-only /.
    probe = (
        "import os, json; "
        "caps = [l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff')][0]; "
        "ro = True\n"
        "try:\n open('/app/x', 'w')\n ro = False\n"
        "except OSError:\n pass\n"
        "print(json.dumps({'uid': os.getuid(), 'caps': caps, 'ro': ro}))"
    )
    out = cluster.kubectl(
        "exec", "-n", ns, name, "-c", pod["spec"]["containers"][0]["name"], "--", "python", "-c", probe
    )
    seen = json.loads(out.stdout)
    assert seen["uid"] != 0
    assert int(seen["caps"], 16) == 0
    assert seen["ro"] is True

    # A pod that asks for root is refused by the namespace's PodSecurity admission.
    refused = cluster.kubectl(
        "run",
        "-n",
        ns,
        "root-pod",
        f"--image={operator_release.runtime}",
        "--restart=Never",
        "--overrides",
        json.dumps({"spec": {"securityContext": {"runAsUser": 0}}}),
        check=False,
    )
    assert refused.returncode != 0
    assert "violates PodSecurity" in refused.stderr
    assert AGENT in name
