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
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import httpx

from agent_runtime.testing import FakeUpstream
from e2e.agent_pod import AgentPod
from tests.support.kube_helpers import GROUP, VERSION, create_provider, put_secret, secret_value, wait_for
from tests.support.operator_process import OperatorProcess

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ROTATIONS = 3


class KeyFollower:
    """ASGI wrapper of the fake: switch its one accepted key at the first use of the next key."""

    def __init__(self, app: ASGIApp, fake: FakeUpstream) -> None:
        self.app = app
        self.fake = fake
        self.upcoming: str | None = None
        self.first_use: dict[str, float] = {}
        self.lock = threading.Lock()

    def expect(self, key: str) -> None:
        """``key`` is the next one; the upstream switches to it on its first use."""
        with self.lock:
            self.upcoming = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            auth = dict(scope.get("headers") or []).get(b"authorization", b"").decode()
            key = auth[7:] if auth.lower().startswith("bearer ") else ""
            with self.lock:
                if key and key == self.upcoming:
                    self.fake.set_api_key(key)
                    self.upcoming = None
                if key and key not in self.first_use:
                    self.first_use[key] = time.monotonic()
        await self.app(scope, receive, send)


class Traffic:
    """One client sending streaming chat completions back to back, counting every outcome."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def progressed(self, since: int, count: int = 5) -> bool:
        """At least ``count`` more successes since ``since`` (or a failure: stop waiting)."""
        return self.ok >= since + count or bool(self.failed)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        body = {"model": "rot", "stream": True, "messages": [{"role": "user", "content": "count for me"}]}
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    with client.stream("POST", f"{self.url}/v1/chat/completions", json=body) as resp:
                        if resp.status_code != 200:
                            self.failed.append(f"HTTP {resp.status_code}: {resp.read()[:200]!r}")
                            continue
                        lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
                    if not lines or lines[-1] != "data: [DONE]" or any('"error"' in line for line in lines):
                        self.failed.append(f"incomplete stream: {lines[-2:]!r}")
                    else:
                        self.ok += 1
                except httpx.HTTPError as exc:
                    self.failed.append(type(exc).__name__)


def _create_agent(k8s: Any, namespace: str, name: str, provider: str) -> None:
    from kubernetes import client as kc

    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SentientAgent",
        "metadata": {"name": name},
        "spec": {
            "llm": {"chain": [{"providerRef": {"name": provider}, "model": "fake-model"}]},
            "systemPrompt": "You count.",
            "auth": {"anonymous": True},
        },
    }
    kc.CustomObjectsApi(k8s).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "sentientagents", body
    )


def test_three_rotations_without_a_failed_request(
    cluster: Any, crds: list[str], k8s: Any, namespace: str, tmp_path: Path
) -> None:
    keys = [f"sk-rot{i}-{secrets.token_hex(8)}" for i in range(ROTATIONS + 1)]
    fake = FakeUpstream("openai", api_key=keys[0], latency=0.005, tokens=30)
    follower = KeyFollower(fake.app, fake)
    fake.app = follower  # type: ignore[assignment]
    with fake, OperatorProcess(cluster.kubeconfig, [namespace]) as op:
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
        _create_agent(k8s, namespace, "rot", "fake")
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
