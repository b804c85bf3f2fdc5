"""Credential rotation end to end, with zero failed requests across three rotations.

The whole path is real: the operator watches the source Secret, writes the provider Secret,
the agent's bound Secret follows, ``e2e.agent_pod`` plays the kubelet (atomic ``..data`` swap
of the mounted Secret) and ``python -m agent_runtime`` serves a continuous sequence of
streaming chat completions against a fake OpenAI upstream.

The upstream accepts exactly one key at a time. It moves to a new key when the first request
carrying that key arrives (the moment the agent starts using it); from then on the old key is
refused. That is the strictest rotation a sequential client can survive: any request still
sent with an old key after the switch, or with a key the upstream was never given, fails.
Streams that started on the old key finish on it.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

from agent_runtime.testing import FakeUpstream
from e2e.agent_pod import AgentPod
from e2e.operator_proc import OperatorProcess
from tests.support.kube_helpers import create_provider, put_secret, secret_value
from tests.support.rotation import KeyFollower, Traffic, create_agent
from tests.support.waiting import wait_for

ROTATIONS = 3


def test_three_rotations_without_a_failed_request(
    cluster: Any, crds: list[str], k8s: Any, namespace: str, tmp_path: Path
) -> None:
    keys = [f"sk-rot{i}-{secrets.token_hex(8)}" for i in range(ROTATIONS + 1)]
    fake = FakeUpstream("openai", api_key=keys[0], latency=0.005, tokens=30)
    follower = KeyFollower.install(fake)
    with (
        fake,
        OperatorProcess(cluster.kubeconfig, [namespace], leader_election=False, log_format="text") as op,
    ):
        put_secret(k8s, namespace, "upstream-key", {"apiKey": keys[0]})
        create_provider(
            k8s,
            namespace,
            "fake",
            {
                "type": "openai-compatible",
                "endpoint": fake.endpoint,
                "models": ["fake-model"],
                "defaultModel": "fake-model",
                "credentials": {"secretRef": {"name": "upstream-key", "key": "apiKey"}},
            },
        )
        create_agent(k8s, namespace, "rot", "fake")
        wait_for(lambda: secret_value(k8s, namespace, "sentient-provider-fake") == keys[0], "provider Secret")
        with AgentPod(k8s, namespace, "rot", tmp_path / "pod", interval=0.2) as pod:
            pod.wait_ready()
            traffic = Traffic(pod.url)
            traffic.start()
            latencies: list[float] = []
            try:
                for new in keys[1:]:
                    mark = traffic.ok
                    wait_for(lambda: traffic.progressed(mark), "traffic before rotating")  # noqa: B023
                    follower.expect(new)
                    edited = time.monotonic()
                    put_secret(k8s, namespace, "upstream-key", {"apiKey": new})
                    used = wait_for(lambda: follower.first_use.get(new), "first use of the new key")  # noqa: B023
                    latencies.append(used - edited)
                mark = traffic.ok
                wait_for(lambda: traffic.progressed(mark), "traffic after the last rotation")
            finally:
                traffic.stop()
            runtime_log = pod.log_path.read_text(errors="replace")
        operator_log = op.log_text()
    print(
        "\nedit-to-use latency (Kubernetes Secret -> first upstream request with the new key): "
        + ", ".join(f"{x:.2f}s" for x in latencies)
    )
    assert traffic.failed == [], traffic.failed[:5]
    state = fake.state.to_json()
    assert state["auth_failures"] == 0
    assert set(state["keys_seen"]) == set(keys)
    assert state["streams_started"] == state["streams_completed"]
    assert traffic.ok > 20
    for key in keys:
        assert key not in runtime_log and key not in operator_log
    assert json.dumps(state["statuses"]) == json.dumps({"200": state["requests"]})
