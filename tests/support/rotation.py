"""Pieces of the rotation e2e test and the rotation-latency benchmark.

- :class:`KeyFollower` wraps a fake upstream: it accepts one key at a time and moves to the
  announced next key at that key's first use (recording when), refusing the old one after; a
  models listing (the operator's key check) with the announced key is accepted without switching.
- :class:`Traffic` is one client sending streaming chat completions back to back.
- :func:`create_agent` creates a minimal anonymous SentientAgent over one provider.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx

from agent_runtime.testing import FakeUpstream
from tests.support.kube_helpers import GROUP, VERSION

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class KeyFollower:
    """ASGI wrapper of the fake: switch its one accepted key at the first use of the next key."""

    def __init__(self, app: ASGIApp, fake: FakeUpstream) -> None:
        self.app = app
        self.fake = fake
        self.upcoming: str | None = None
        self.first_use: dict[str, float] = {}
        self.lock = threading.Lock()

    @classmethod
    def install(cls, fake: FakeUpstream) -> KeyFollower:
        """Wrap ``fake``'s app (before ``fake.start()``)."""
        follower = cls(fake.app, fake)
        fake.app = follower  # type: ignore[assignment]
        return follower

    def expect(self, key: str) -> None:
        """``key`` is the next one; the upstream switches to it on its first use."""
        with self.lock:
            self.upcoming = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            auth = dict(scope.get("headers") or []).get(b"authorization", b"").decode()
            key = auth[7:] if auth.lower().startswith("bearer ") else ""
            if str(scope.get("path", "")).endswith("/models"):
                # The operator checks a changed key at once with a models listing (and
                # validateBeforeRollout does too). A real provider accepts both keys while a key
                # rotates; here the listing is answered for the announced key without switching,
                # so that the switch still marks the runtime's first use of it.
                with self.lock:
                    if key and key == self.upcoming and self.fake.state.api_key:
                        scope = dict(scope)
                        scope["headers"] = [
                            (name, value)
                            for name, value in scope.get("headers") or []
                            if name != b"authorization"
                        ] + [(b"authorization", f"Bearer {self.fake.state.api_key}".encode())]
                await self.app(scope, receive, send)
                return
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
        """Start sending."""
        self._thread.start()

    def progressed(self, since: int, count: int = 5) -> bool:
        """At least ``count`` more successes since ``since`` (or a failure: stop waiting)."""
        return self.ok >= since + count or bool(self.failed)

    def stop(self) -> None:
        """Stop after the request in flight."""
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


def create_agent(k8s: Any, namespace: str, name: str, provider: str, **spec: Any) -> None:
    """An anonymous SentientAgent whose chain is ``provider`` (model fake-model)."""
    from kubernetes import client as kc

    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SentientAgent",
        "metadata": {"name": name},
        "spec": {
            "systemPrompt": "You count.",
            "llm": {"chain": [{"providerRef": {"name": provider}, "model": "fake-model"}]},
            "auth": {"anonymous": True},
            **spec,
        },
    }
    kc.CustomObjectsApi(k8s).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "sentientagents", body
    )
