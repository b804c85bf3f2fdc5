"""OIDC and roles end to end: spec.auth.oidc and spec.auth.authorization applied to the apiserver,
rendered by the operator (the introspection client secret bound into the credentials Secret, never
in the ConfigMap), enforced by a runtime fed with exactly what the operator wrote, against a real
ORY Hydra issuing client-credentials tokens."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_runtime.config import OIDC_CLIENT_SECRET_FILE
from agent_runtime.testing import run_fake
from e2e.agent_pod import AgentPod
from e2e.agents import CALLER_KEY, PROVIDER_KEY, agent, callers, provider, wait_ready
from e2e.operator_proc import running_operator
from e2e.resources import apply, get
from tests.support.hydra import Hydra, require_hydra  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("require_hydra")


@pytest.fixture
def fake_upstream() -> Any:
    with run_fake("openai", api_key=PROVIDER_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def hydra() -> Iterator[Hydra]:
    with Hydra() as server:
        yield server


def _chat(pod: AgentPod, credential: str) -> httpx.Response:
    return httpx.post(
        f"{pod.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {credential}"},
        json={"model": "helper", "messages": [{"role": "user", "content": "hello"}]},
        timeout=30,
    )


def test_oidc_and_roles_rendered_and_enforced(
    cluster: Any, crds: list[str], k8s: Any, namespace: str, fake_upstream: Any, hydra: Hydra, tmp_path: Path
) -> None:
    audience = f"helper.{namespace}"
    service = hydra.client(f"svc-{namespace}", scope="helper.chat", audience=[audience, "other-agent"])
    opaque = hydra.client(f"opq-{namespace}", scope="helper.chat", audience=[audience], strategy="opaque")
    introspector = hydra.client(f"introspect-{namespace}", scope="", audience=[])
    oidc_secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "helper-oidc", "namespace": namespace},
        "stringData": {"client-secret": introspector},
    }
    auth = {
        "apiKeys": {"secretRef": {"name": "helper-callers"}},
        "oidc": {
            "issuer": hydra.issuer,
            "audiences": [audience],
            "introspection": {
                "endpoint": hydra.introspection_endpoint,
                "clientID": f"introspect-{namespace}",
                "clientSecretRef": {"name": "helper-oidc", "key": "client-secret"},
            },
        },
        "authorization": {
            "roles": [
                {
                    "name": "service",
                    "routes": ["chat"],
                    "claims": [{"claim": "scope", "value": "helper.chat"}],
                },
                {"name": "reader", "routes": ["assist"], "apiKeys": ["ci"]},
            ]
        },
    }
    with running_operator(cluster, namespace):
        apply(cluster, *provider(namespace, fake_upstream.endpoint), callers(namespace), oidc_secret)
        apply(cluster, agent(namespace, auth=auth))
        wait_ready(cluster, namespace)
        config_map = get(cluster, "configmap", "helper-config", namespace)
        assert config_map is not None
        assert introspector not in str(config_map["data"])
        assert "oidc:" in config_map["data"]["config.yaml"]
        bound = get(cluster, "secret", "helper-credentials", namespace)
        assert bound is not None
        assert base64.b64decode(bound["data"][OIDC_CLIENT_SECRET_FILE]).decode() == introspector
        with AgentPod(k8s, namespace, "helper", tmp_path / "pod") as pod:
            pod.wait_ready()
            jwt_token = hydra.token(f"svc-{namespace}", service, scope="helper.chat", audience=audience)
            assert _chat(pod, jwt_token).status_code == 200
            opaque_token = hydra.token(f"opq-{namespace}", opaque, scope="helper.chat", audience=audience)
            assert _chat(pod, opaque_token).status_code == 200
            # The reader key may not use the OpenAI API; a token for another agent is refused.
            refused = _chat(pod, CALLER_KEY)
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "route_not_allowed"
            foreign = hydra.token(f"svc-{namespace}", service, scope="helper.chat", audience="other-agent")
            assert _chat(pod, foreign).status_code == 403
