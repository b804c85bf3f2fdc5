"""OAuth2 / OIDC and roles against a real ORY Hydra started by the tests.

Service callers get access tokens from Hydra by the client-credentials grant and call the
runtime's HTTP API with them: JWTs are checked against the keys found through Hydra's discovery
document, opaque tokens by Hydra's RFC 7662 introspection; roles map API keys and token scopes
to routes, models and tiers.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from agent_runtime import protocol
from agent_runtime.audit import verify_file
from agent_runtime.auth import Authenticator, AuthError
from agent_runtime.client import parse_stream
from agent_runtime.config import AuthRuntimeConfig
from agent_runtime.protocol import DoneEvent, ErrorEvent
from agent_runtime.reload import CredentialFiles
from agent_runtime.testing import FakeUpstream
from tests.support.hydra import Hydra, require_hydra  # noqa: F401  (a fixture)
from tests.support.runtime import (
    AUDIT_KEY,
    InProcessRuntime,
    RuntimeFiles,
    chain_entry,
    default_credentials,
    make_config,
)

pytestmark = pytest.mark.usefixtures("require_hydra")

AUDIENCE = "agent-a"
UPSTREAM_KEY = "sk-upstream-oidc-test"
INTROSPECTOR = "agent-a-introspector"
CACHE_TTL = 1.0


def roles() -> dict[str, Any]:
    """reader: API key alice and scope agent.read, on /assist and /v1/models; service: scope agent.chat."""
    return {
        "roles": [
            {
                "name": "service",
                "routes": ["chat", "ws"],
                "models": ["fake-model"],
                "tier": "gold",
                "claims": [{"claim": "scope", "value": "agent.chat"}],
            },
            {
                "name": "reader",
                "routes": ["assist", "models"],
                "apiKeys": ["alice"],
                "claims": [{"claim": "scope", "value": "agent.read"}],
            },
        ]
    }


@pytest.fixture(scope="module")
def hydra() -> Iterator[Hydra]:
    with Hydra() as server:
        yield server


@pytest.fixture(scope="module")
def clients(hydra: Hydra) -> dict[str, str]:
    """Client-credentials clients of Hydra: id -> secret."""
    return {
        "svc-jwt": hydra.client("svc-jwt", scope="agent.chat agent.read", audience=[AUDIENCE, "agent-b"]),
        "svc-opaque": hydra.client(
            "svc-opaque", scope="agent.chat", audience=[AUDIENCE, "agent-b"], strategy="opaque"
        ),
        INTROSPECTOR: hydra.client(INTROSPECTOR, scope="", audience=[]),
    }


def oidc_config(hydra: Hydra, issuer: str | None = None) -> dict[str, Any]:
    return {
        "issuer": issuer or hydra.issuer,
        "audiences": [AUDIENCE],
        "introspection": {
            "endpoint": hydra.introspection_endpoint,
            "clientID": INTROSPECTOR,
            "clientSecretFile": "oidc-client-secret",
            "cacheTTL": f"{CACHE_TTL}s",
            "negativeCacheTTL": "1s",
        },
        "jwksMinRefresh": "1s",
    }


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream("openai", api_key=UPSTREAM_KEY) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def server(
    hydra: Hydra, clients: dict[str, str], fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessRuntime]:
    root = tmp_path_factory.mktemp("oidc")
    key_file = "provider.default.fake.apiKey"
    config = make_config(
        chain=[chain_entry(fake, credentialFile=key_file, retry={"maxAttempts": 1})],
        agent_class="tests.support.runtime_agents:ScriptedAgent",
        auth={"oidc": oidc_config(hydra), "authorization": roles()},
    )
    credentials = default_credentials({key_file: UPSTREAM_KEY, "oidc-client-secret": clients[INTROSPECTOR]})
    with InProcessRuntime(RuntimeFiles(root, config, credentials), audit_path=root / "audit.log") as runtime:
        yield runtime


def chat(server: InProcessRuntime, token: str, model: str = "fake-model") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
    return httpx.post(
        f"{server.url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
    )


def assist(server: InProcessRuntime, headers: dict[str, str]) -> httpx.Response:
    body = {"query": {"id": protocol.new_ulid(), "prompt": "echo:hello"}}
    return httpx.post(f"{server.url}/assist", json=body, headers=headers, timeout=10)


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def test_client_credentials_jwt_through_discovery(
    server: InProcessRuntime, hydra: Hydra, clients: dict[str, str]
) -> None:
    token = hydra.token("svc-jwt", clients["svc-jwt"], scope="agent.chat", audience=AUDIENCE)
    assert token.count(".") == 2, "a JWT access token"
    response = chat(server, token)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]
    # No JWKS URL was configured: discovery found it.
    verifier = server.runtime.current.auth.oidc if server.runtime.current else None
    assert verifier is not None and verifier.config.jwks_url is None


def test_rotated_signing_key_is_picked_up(
    server: InProcessRuntime, hydra: Hydra, clients: dict[str, str]
) -> None:
    before = hydra.token("svc-jwt", clients["svc-jwt"], scope="agent.chat", audience=AUDIENCE)
    assert chat(server, before).status_code == 200
    new_kid = "rotated-" + secrets.token_hex(4)
    hydra.rotate_signing_key(new_kid)
    after = hydra.token("svc-jwt", clients["svc-jwt"], scope="agent.chat", audience=AUDIENCE)
    assert kid_of(after) == new_kid != kid_of(before)
    time.sleep(1.1)  # jwksMinRefresh: an unknown kid refetches the keys at most once a second
    response = chat(server, after)
    assert response.status_code == 200, response.text
    # Tokens signed with the previous key stay valid while the issuer still publishes it.
    assert chat(server, before).status_code == 200


def test_opaque_token_introspected_then_revoked(
    server: InProcessRuntime, hydra: Hydra, clients: dict[str, str]
) -> None:
    token = hydra.token("svc-opaque", clients["svc-opaque"], scope="agent.chat", audience=AUDIENCE)
    assert token.count(".") != 2, "an opaque access token"
    assert chat(server, token).status_code == 200
    hydra.revoke("svc-opaque", clients["svc-opaque"], token)
    time.sleep(CACHE_TTL + 0.2)  # the positive cache keeps a revoked token at most cacheTTL
    response = chat(server, token)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_inactive"


@pytest.mark.parametrize("client", ["svc-jwt", "svc-opaque"])
def test_token_for_another_agent_is_refused(
    server: InProcessRuntime, hydra: Hydra, clients: dict[str, str], client: str
) -> None:
    token = hydra.token(client, clients[client], scope="agent.chat", audience="agent-b")
    response = chat(server, token)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "wrong_audience"


async def test_token_of_another_issuer_is_refused(
    hydra: Hydra, clients: dict[str, str], tmp_path: Path
) -> None:
    # The runtime trusts another issuer; Hydra's genuine tokens (JWT and opaque) name Hydra.
    (tmp_path / "oidc-client-secret").write_text(clients[INTROSPECTOR])
    oidc = oidc_config(hydra, issuer="https://login.other.example")
    oidc["jwksURL"] = f"{hydra.issuer}/.well-known/jwks.json"
    auth = Authenticator(AuthRuntimeConfig.model_validate({"oidc": oidc}), CredentialFiles(tmp_path).read)
    try:
        for client in ("svc-jwt", "svc-opaque"):
            token = hydra.token(client, clients[client], scope="agent.chat", audience=AUDIENCE)
            with pytest.raises(AuthError) as info:
                await auth.authenticate({"authorization": f"Bearer {token}"})
            assert (info.value.status, info.value.reason) == (401, "wrong_issuer")
    finally:
        assert auth.oidc is not None
        await auth.oidc.aclose()


def test_roles_refuse_with_403_a_reason_and_an_audit_record(
    server: InProcessRuntime, hydra: Hydra, clients: dict[str, str]
) -> None:
    # bob's key is genuine but holds no role.
    response = assist(server, {"x-api-key": "bob-secret-key"})
    assert response.status_code == 403
    events = list(parse_stream(response.text.split("\n")))
    assert [type(e) for e in events] == [ErrorEvent, DoneEvent]
    error = events[0]
    assert isinstance(error, ErrorEvent) and error.error_code == 403
    assert error.details == {"reason": "no_role"}
    # alice is a reader: /assist yes, /v1/chat/completions no (OpenAI's error shape).
    assert assist(server, {"x-api-key": "alice-secret-key"}).status_code == 200
    refused = chat(server, "alice-secret-key")
    assert refused.status_code == 403
    assert refused.json()["error"]["type"] == "permission_error"
    assert refused.json()["error"]["code"] == "route_not_allowed"
    # The service role allows fake-model only.
    token = hydra.token("svc-jwt", clients["svc-jwt"], scope="agent.chat", audience=AUDIENCE)
    other_model = chat(server, token, model="gpt-5")
    assert other_model.status_code == 403 and other_model.json()["error"]["code"] == "model_not_allowed"
    # A token whose scope grants reader only may use /assist, not chat.
    reader = hydra.token("svc-jwt", clients["svc-jwt"], scope="agent.read", audience=AUDIENCE)
    assert assist(server, {"authorization": f"Bearer {reader}"}).status_code == 200
    assert chat(server, reader).json()["error"]["code"] == "route_not_allowed"

    audit = server.runtime.audit
    assert audit is not None and audit.path is not None
    text = Path(audit.path).read_text()
    denials = [json.loads(line) for line in text.splitlines() if '"authz.deny"' in line]
    assert {d["reason"] for d in denials} >= {"no_role", "route_not_allowed", "model_not_allowed"}
    assert any(d["principal"] == "bob" and d["route"] == "/assist" for d in denials)
    assert token not in text and reader not in text and "bob-secret-key" not in text
    assert verify_file(Path(audit.path), AUDIT_KEY.encode()).ok
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'sentient_authz_denials_total{reason="no_role",route="/assist"}' in metrics
    assert 'sentient_authz_denials_total{reason="model_not_allowed",route="/v1/chat/completions"}' in metrics


def test_ws_follows_the_roles(server: InProcessRuntime, hydra: Hydra, clients: dict[str, str]) -> None:
    from websockets.sync.client import connect

    from tests.test_runtime_websocket import drain

    def frames(
        headers: dict[str, str], subprotocol: str, body: dict[str, Any]
    ) -> tuple[list[str], int | None]:
        url = server.url.replace("http://", "ws://") + "/ws"
        with connect(url, additional_headers=headers, subprotocols=[subprotocol], open_timeout=10) as ws:  # type: ignore[list-item]
            ws.send(json.dumps(body))
            return drain(ws)

    chat_body = {"model": "fake-model", "messages": [{"role": "user", "content": "hello"}]}
    token = hydra.token("svc-jwt", clients["svc-jwt"], scope="agent.chat", audience=AUDIENCE)
    answered, code = frames({"authorization": f"Bearer {token}"}, "openai.v1", chat_body)
    assert code == 1000 and json.loads(answered[-1])["choices"][0]["message"]["content"] == "Echo: hello"
    # alice (reader) has no ws role: refused after the first message with a 403 error and 1008.
    refused, code = frames(
        {"x-api-key": "alice-secret-key"}, "sentient.v1", {"query": {"id": "q1", "prompt": "echo:hi"}}
    )
    assert code == 1008
    error = json.loads(refused[0])
    assert error["content"]["error_code"] == 403 and error["content"]["details"] == {
        "reason": "route_not_allowed"
    }
