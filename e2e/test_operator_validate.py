"""rotation.validateBeforeRollout: a rotated key the provider refuses is not bound."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from e2e.agents import callers, provider, wait_ready
from e2e.operator_proc import running_operator
from e2e.resources import apply, condition, get
from tests.support.waiting import wait_for


class Models:
    """A models-list endpoint that accepts exactly one API key (the provider side of validation)."""

    def __init__(self) -> None:
        self.accepted = "sk-e2e-provider-key"
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                ok = self.headers.get("Authorization") == f"Bearer {outer.accepted}"
                body = json.dumps({"data": [{"id": "fake-model"}]} if ok else {"error": "bad key"}).encode()
                self.send_response(200 if ok and self.path.endswith("/models") else 401 if not ok else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def models() -> Iterator[Models]:
    server = Models()
    try:
        yield server
    finally:
        server.close()


def test_refused_key_is_not_bound(cluster: Any, crds: list[str], namespace: str, models: Models) -> None:
    with running_operator(cluster, namespace):
        docs = provider(namespace, models.endpoint)
        agent = {
            "apiVersion": "sentient.dev/v1alpha1",
            "kind": "SentientAgent",
            "metadata": {"name": "helper", "namespace": namespace},
            "spec": {
                "systemPrompt": "x",
                "llm": {"chain": [{"providerRef": {"name": "fake"}}]},
                "auth": {"apiKeys": {"secretRef": {"name": "helper-callers"}}},
                "rotation": {"validateBeforeRollout": True},
            },
        }
        apply(cluster, *docs, callers(namespace), agent)
        wait_ready(cluster, namespace)
        key = f"provider.{namespace}.fake.apiKey"

        def bound() -> str:
            secret = get(cluster, "secret", "helper-credentials", namespace) or {}
            return base64.b64decode((secret.get("data") or {}).get(key, "")).decode()

        assert bound() == "sk-e2e-provider-key"

        docs[0]["stringData"] = {"apiKey": "sk-wrong"}
        apply(cluster, docs[0])
        obj = wait_for(
            lambda: (
                (o := get(cluster, "sentientagent", "helper", namespace))
                and condition(o, "CredentialsValid").get("reason") == "Unauthorized"
                and o
            ),
            timeout=60,
            what="CredentialsValid=False/Unauthorized",
        )
        assert bound() == "sk-e2e-provider-key"
        assert condition(obj, "Ready")["status"] == "True"  # still serving with the previous key
        assert "sk-wrong" not in json.dumps(obj)

        models.accepted = "sk-e2e-rotated"
        docs[0]["stringData"] = {"apiKey": "sk-e2e-rotated"}
        apply(cluster, docs[0])
        wait_for(lambda: bound() == "sk-e2e-rotated", timeout=60, what="the accepted key to be bound")
        wait_for(
            lambda: (
                condition(get(cluster, "sentientagent", "helper", namespace), "CredentialsValid").get(
                    "status"
                )
                == "True"
            ),
            timeout=60,
            what="CredentialsValid=True",
        )
