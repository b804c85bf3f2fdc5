"""Auth matrix: API keys (hashed, tiers) and JWT against a JWKS served by a local HTTP server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from agent_runtime import protocol
from agent_runtime.audit import verify_file
from agent_runtime.auth import Authenticator, AuthError, hash_api_key
from agent_runtime.client import parse_stream
from agent_runtime.config import AuthRuntimeConfig
from agent_runtime.protocol import DoneEvent, ErrorEvent
from agent_runtime.reload import CredentialFiles
from tests.support.jwks import JWKSServer
from tests.support.runtime import (
    AUDIT_KEY,
    InProcessRuntime,
    RuntimeFiles,
    api_keys_json,
    default_credentials,
    make_config,
)

ISSUER = "https://issuer.test"
AUDIENCE = "sentient-agent"


def _keypair(kid: str) -> tuple[Any, dict[str, Any]]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    public_jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
    return private, public_jwk


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    trusted, trusted_jwk = _keypair("k1")
    rogue, _ = _keypair("k1")
    return {"trusted": trusted, "jwk": trusted_jwk, "rogue": rogue}


@pytest.fixture(scope="module")
def jwks(keys: dict[str, Any]) -> Iterator[JWKSServer]:
    with JWKSServer({"keys": [keys["jwk"]]}) as server:
        yield server


def token(private: Any, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "iat": now, "exp": now + 300, "tier": "gold"}
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, private, algorithm="RS256", headers={"kid": "k1"})


def authenticator(tmp_path: Path, jwks_url: str | None, anonymous: bool = False) -> Authenticator:
    (tmp_path / "apikeys.json").write_text(
        api_keys_json({"alice": ("alice-secret-key", "gold"), "bob": ("bob-secret-key", None)})
    )
    config: dict[str, Any] = {"anonymous": anonymous, "apiKeysFile": "apikeys.json"}
    if jwks_url:
        config["jwt"] = {"issuer": ISSUER, "audiences": [AUDIENCE, "other"], "jwksURL": jwks_url}
    return Authenticator(AuthRuntimeConfig.model_validate(config), CredentialFiles(tmp_path).read)


async def expect(auth: Authenticator, headers: dict[str, str], status: int, reason: str) -> None:
    with pytest.raises(AuthError) as info:
        await auth.authenticate(headers)
    assert (info.value.status, info.value.reason) == (status, reason)


async def test_api_key_matrix(tmp_path: Path) -> None:
    auth = authenticator(tmp_path, None)
    await expect(auth, {}, 401, "missing_credentials")
    await expect(auth, {"x-api-key": "nope"}, 401, "invalid_api_key")
    await expect(auth, {"authorization": "Bearer nope"}, 401, "invalid_api_key")
    await expect(auth, {"authorization": "Basic YTpi"}, 401, "bad_scheme")
    alice = await auth.authenticate({"x-api-key": "alice-secret-key"})
    assert (alice.id, alice.kind, alice.tier) == ("alice", "apiKey", "gold")
    bob = await auth.authenticate({"authorization": "Bearer bob-secret-key"})
    assert (bob.id, bob.tier) == ("bob", None)


async def test_anonymous_allows_no_credentials_but_not_wrong_ones(tmp_path: Path) -> None:
    auth = authenticator(tmp_path, None, anonymous=True)
    assert (await auth.authenticate({})).kind == "anonymous"
    await expect(auth, {"x-api-key": "nope"}, 401, "invalid_api_key")


async def test_api_key_file_is_hashed_and_reloaded(tmp_path: Path) -> None:
    creds = CredentialFiles(tmp_path)
    (tmp_path / "apikeys.json").write_text(json.dumps({"k": {"sha256": hash_api_key("first"), "tier": None}}))
    auth = Authenticator(AuthRuntimeConfig.model_validate({"apiKeysFile": "apikeys.json"}), creds.read)
    assert (await auth.authenticate({"x-api-key": "first"})).id == "k"
    assert "first" not in (tmp_path / "apikeys.json").read_text()
    (tmp_path / "apikeys.json").write_text(
        json.dumps({"k": {"sha256": hash_api_key("second"), "tier": None}})
    )
    creds.invalidate()
    await expect(auth, {"x-api-key": "first"}, 401, "invalid_api_key")
    assert (await auth.authenticate({"x-api-key": "second"})).id == "k"


@pytest.mark.parametrize(
    "placeholder", ["REPLACE-WITH-A-LONG-RANDOM-KEY", "your-caller-key", "<api-key>", "xxxxxxxx"]
)
async def test_placeholder_api_key_never_authenticates(
    tmp_path: Path, placeholder: str, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "apikeys.json").write_text(
        api_keys_json({"starter": (placeholder, None), "alice": ("alice-secret-key", None)})
    )
    auth = Authenticator(
        AuthRuntimeConfig.model_validate({"apiKeysFile": "apikeys.json"}), CredentialFiles(tmp_path).read
    )
    with caplog.at_level("WARNING", logger="agent_runtime.auth"):
        await expect(auth, {"x-api-key": placeholder}, 401, "invalid_api_key")
        await expect(auth, {"authorization": f"Bearer {placeholder}"}, 401, "invalid_api_key")
    assert (await auth.authenticate({"x-api-key": "alice-secret-key"})).id == "alice"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings and all("'starter'" in w and "placeholder" in w for w in warnings)
    assert not any(placeholder in w for w in warnings)


async def test_jwt_matrix(tmp_path: Path, keys: dict[str, Any], jwks: JWKSServer) -> None:
    auth = authenticator(tmp_path, jwks.url)
    good = await auth.authenticate({"authorization": f"Bearer {token(keys['trusted'])}"})
    assert (good.id, good.kind, good.tier) == ("user-1", "jwt", "gold")
    second_audience = await auth.authenticate(
        {"authorization": f"Bearer {token(keys['trusted'], aud='other')}"}
    )
    assert second_audience.id == "user-1"
    expired = token(keys["trusted"], iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)
    await expect(auth, {"authorization": f"Bearer {expired}"}, 401, "token_expired")
    await expect(
        auth, {"authorization": f"Bearer {token(keys['trusted'], aud='someone-else')}"}, 403, "wrong_audience"
    )
    await expect(
        auth, {"authorization": f"Bearer {token(keys['trusted'], iss='https://evil')}"}, 401, "wrong_issuer"
    )
    await expect(auth, {"authorization": f"Bearer {token(keys['rogue'])}"}, 401, "invalid_token")
    await expect(auth, {"authorization": f"Bearer {token(keys['trusted'], sub=None)}"}, 401, "invalid_token")
    await expect(auth, {"authorization": "Bearer a.b.c"}, 401, "invalid_token")
    none_alg = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 60}, "", "none"
    )
    await expect(auth, {"authorization": f"Bearer {none_alg}"}, 401, "invalid_token")
    # API keys keep working next to JWT.
    assert (await auth.authenticate({"x-api-key": "alice-secret-key"})).id == "alice"
    # The JWKS is cached: many validations, one fetch.
    assert jwks.fetches == 1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, jwks: JWKSServer) -> Iterator[InProcessRuntime]:
    root = tmp_path_factory.mktemp("auth")
    config = make_config(
        agent_class="tests.support.runtime_agents:ScriptedAgent",
        jwt={"issuer": ISSUER, "audiences": [AUDIENCE], "jwksURL": jwks.url},
    )
    files = RuntimeFiles(root, config, default_credentials())
    with InProcessRuntime(files, audit_path=root / "audit.log") as runtime:
        yield runtime


def assist(server: InProcessRuntime, headers: dict[str, str]) -> httpx.Response:
    body = {"query": {"id": protocol.new_ulid(), "prompt": "echo:hello"}}
    return httpx.post(f"{server.url}/assist", json=body, headers=headers, timeout=10)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"x-api-key": "wrong-key"}, 401),
        ({"x-api-key": "alice-secret-key"}, 200),
        ({"authorization": "Bearer bob-secret-key"}, 200),
    ],
)
def test_assist_over_http(server: InProcessRuntime, headers: dict[str, str], status: int) -> None:
    response = assist(server, headers)
    assert response.status_code == status
    events = list(parse_stream(response.text.split("\n")))
    assert isinstance(events[-1], DoneEvent)
    if status != 200:
        assert [type(e) for e in events] == [ErrorEvent, DoneEvent]
        assert isinstance(events[0], ErrorEvent) and events[0].error_code == status


def test_jwt_over_http(server: InProcessRuntime, keys: dict[str, Any]) -> None:
    assert assist(server, {"authorization": f"Bearer {token(keys['trusted'])}"}).status_code == 200
    assert assist(server, {"authorization": f"Bearer {token(keys['trusted'], aud='x')}"}).status_code == 403


def test_openai_json_errors(server: InProcessRuntime) -> None:
    response = httpx.post(f"{server.url}/v1/chat/completions", json={}, headers={"x-api-key": "wrong-key"})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert httpx.get(f"{server.url}/v1/models").status_code == 401


def test_auth_failures_are_audited_without_secrets(server: InProcessRuntime) -> None:
    assist(server, {"x-api-key": "a-guessed-secret"})
    audit = server.runtime.audit
    assert audit is not None and audit.path is not None
    log_path = Path(audit.path)
    text = log_path.read_text()
    assert '"event":"auth.failure"' in text
    assert "a-guessed-secret" not in text and "alice-secret-key" not in text
    assert verify_file(log_path, AUDIT_KEY.encode()).ok
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'sentient_auth_failures_total{reason="invalid_api_key"}' in metrics
