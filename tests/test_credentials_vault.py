"""Vault / OpenBao source against a real OpenBao dev server: KV v1/v2, namespaces, auth, faults."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sentient_operator.api.v1alpha1 import VaultSource
from sentient_operator.credentials.base import (
    KeyNotFound,
    Malformed,
    PermissionDenied,
    SecretNotFound,
    StoreUnreachable,
    Throttled,
)
from sentient_operator.credentials.vault import VaultCredentialSource
from tests.support.credentials import Secrets
from tests.support.fault_proxy import FaultProxy
from tests.support.openbao import OpenBao, bao_binary

pytestmark = pytest.mark.skipif(bao_binary() is None, reason="bao not installed (python -m e2e.tools ensure)")

NS = "team"
READ_ALL = 'path "secret/*" { capabilities = ["read"] }\npath "kv1/*" { capabilities = ["read"] }'


@pytest.fixture(scope="module")
def bao() -> Iterator[OpenBao]:
    with OpenBao() as server:
        c = server.client()
        c.secrets.kv.v2.create_or_update_secret(path="llm/openai", secret={"apiKey": "sk-v2-one"})
        c.secrets.kv.v2.create_or_update_secret(path="llm/number", secret={"apiKey": 42})
        server.enable_kv1()
        c.secrets.kv.v1.create_or_update_secret(
            path="llm/openai", secret={"token": "sk-v1"}, mount_point="kv1"
        )
        yield server


@pytest.fixture
def secrets_store(bao: OpenBao) -> Secrets:
    store = Secrets()
    store.put(NS, "vault-token", token=bao.token_with_policy("read-all", READ_ALL))
    return store


def source(spec: dict[str, object], store: Secrets, **kw: object) -> VaultCredentialSource:
    return VaultCredentialSource(VaultSource.model_validate(spec), NS, store.reader, **kw)  # type: ignore[arg-type]


def token_spec(server: str, **extra: object) -> dict[str, object]:
    spec: dict[str, object] = {
        "server": server,
        "path": "llm/openai",
        "auth": {"token": {"secretRef": {"name": "vault-token", "key": "token"}}},
    }
    spec.update(extra)
    return spec


def test_kv2_reads_the_latest_version_and_follows_rotation(bao: OpenBao, secrets_store: Secrets) -> None:
    src = source(token_spec(bao.url), secrets_store)
    first = src.fetch()
    assert first.value == "sk-v2-one"
    bao.client().secrets.kv.v2.create_or_update_secret(path="llm/rotating", secret={"apiKey": "a"})
    rot = source(token_spec(bao.url, path="llm/rotating"), secrets_store)
    v1 = rot.fetch()
    bao.client().secrets.kv.v2.create_or_update_secret(path="llm/rotating", secret={"apiKey": "b"})
    v2 = rot.fetch()
    assert (v1.value, v2.value) == ("a", "b")
    assert v1.version is not None and v2.version is not None and int(v2.version) == int(v1.version) + 1
    assert "sk-" not in repr(first)


def test_kv1_mount(bao: OpenBao, secrets_store: Secrets) -> None:
    src = source(token_spec(bao.url, mount="kv1", kvVersion=1, key="token"), secrets_store)
    got = src.fetch()
    assert got.value == "sk-v1"
    assert got.version is None


def test_vault_namespace(bao: OpenBao, secrets_store: Secrets) -> None:
    root = bao.client()
    root.write_data("sys/namespaces/team-a", data={})
    in_ns = bao.client(namespace="team-a")
    in_ns.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    in_ns.secrets.kv.v2.create_or_update_secret(path="llm/openai", secret={"apiKey": "sk-in-namespace"})
    # The root token is valid in child namespaces.
    secrets_store.put(NS, "root-token", token=bao.root_token)
    spec = token_spec(bao.url, namespace="team-a")
    spec["auth"] = {"token": {"secretRef": {"name": "root-token", "key": "token"}}}
    assert source(spec, secrets_store).fetch().value == "sk-in-namespace"
    # Without the namespace the same path is the root namespace's secret.
    spec.pop("namespace")
    assert source(spec, secrets_store).fetch().value == "sk-v2-one"


def test_static_token_is_reread_from_its_secret(bao: OpenBao, secrets_store: Secrets) -> None:
    src = source(token_spec(bao.url), secrets_store)
    assert src.fetch().value == "sk-v2-one"
    secrets_store.put(NS, "vault-token", token="not-a-token")
    with pytest.raises(PermissionDenied):
        src.fetch()
    secrets_store.put(NS, "vault-token", token=bao.token_with_policy("read-all", READ_ALL))
    assert src.fetch().value == "sk-v2-one"


def test_approle_login_renewal_and_relogin(bao: OpenBao, secrets_store: Secrets) -> None:
    bao.client().sys.create_or_update_policy(name="read-all", policy=READ_ALL)
    role_id, secret_id = bao.enable_approle("llm-reader", ["read-all"], ttl="1h")
    secrets_store.put(NS, "approle", secretId=secret_id)
    now = [1000.0]
    spec = token_spec(bao.url)
    spec["auth"] = {"appRole": {"roleId": role_id, "secretRef": {"name": "approle", "key": "secretId"}}}
    src = source(spec, secrets_store, clock=lambda: now[0])
    assert src.fetch().value == "sk-v2-one"
    client = src._client
    assert client is not None
    first_token = client.token
    # Past two thirds of the TTL the token is renewed, not replaced.
    now[0] += 3600 * 0.7
    assert src.fetch().value == "sk-v2-one"
    assert client.token == first_token
    # A revoked token (e.g. by an operator of Vault) is replaced by a fresh login.
    bao.client().auth.token.revoke(first_token)
    assert src.fetch().value == "sk-v2-one"
    assert client.token != first_token
    # Past its TTL the token is not used at all: a new login.
    second = client.token
    now[0] += 7200
    assert src.fetch().value == "sk-v2-one"
    assert client.token != second


def test_approle_with_wrong_secret_id_is_permission_denied(bao: OpenBao, secrets_store: Secrets) -> None:
    role_id, _ = bao.enable_approle("llm-reader-2", ["read-all"])
    secrets_store.put(NS, "approle-bad", secretId="00000000-0000-0000-0000-000000000000")
    spec = token_spec(bao.url)
    spec["auth"] = {"appRole": {"roleId": role_id, "secretRef": {"name": "approle-bad", "key": "secretId"}}}
    with pytest.raises(PermissionDenied) as err:
        source(spec, secrets_store).fetch()
    assert "0000" not in str(err.value)


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"path": "llm/missing"}, SecretNotFound),
        ({"key": "nope"}, KeyNotFound),
        ({"path": "llm/number"}, Malformed),
    ],
)
def test_content_faults(bao: OpenBao, secrets_store: Secrets, extra: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        source(token_spec(bao.url, **extra), secrets_store).fetch()


def test_policy_without_read_is_permission_denied(bao: OpenBao, secrets_store: Secrets) -> None:
    secrets_store.put(
        NS, "weak", token=bao.token_with_policy("nothing", 'path "sys/nothing" { capabilities = ["read"] }')
    )
    spec = token_spec(bao.url)
    spec["auth"] = {"token": {"secretRef": {"name": "weak", "key": "token"}}}
    with pytest.raises(PermissionDenied) as err:
        source(spec, secrets_store).fetch()
    assert err.value.reason == "PermissionDenied"


def test_missing_token_secret(bao: OpenBao) -> None:
    with pytest.raises(SecretNotFound) as err:
        source(token_spec(bao.url), Secrets()).fetch()
    assert "vault-token" in str(err.value)


def test_unreachable_and_recovery(bao: OpenBao, secrets_store: Secrets) -> None:
    with FaultProxy(bao.url) as proxy:
        src = source(token_spec(proxy.url), secrets_store)
        assert src.fetch().value == "sk-v2-one"
        proxy.mode = "reset"
        with pytest.raises(StoreUnreachable) as err:
            src.fetch()
        assert bao.root_token not in str(err.value)
        proxy.mode = "pass"
        assert src.fetch().value == "sk-v2-one"


def test_nothing_listening_is_unreachable(secrets_store: Secrets) -> None:
    from tests.support.net import free_port

    with pytest.raises(StoreUnreachable):
        source(token_spec(f"http://127.0.0.1:{free_port()}"), secrets_store, timeout=2.0).fetch()


def test_rate_limit_quota_is_throttled(bao: OpenBao, secrets_store: Secrets) -> None:
    c = bao.client()
    c.secrets.kv.v2.create_or_update_secret(path="quota/llm", secret={"apiKey": "sk-q"})
    # A real OpenBao quota: one request per hour on this path, so the second read is refused.
    c.write_data(
        "sys/quotas/rate-limit/slow", data={"path": "secret/data/quota/llm", "rate": 1, "interval": "1h"}
    )
    try:
        src = source(token_spec(bao.url, path="quota/llm"), secrets_store)
        assert src.fetch().value == "sk-q"
        with pytest.raises(Throttled):
            src.fetch()
    finally:
        c.delete("sys/quotas/rate-limit/slow")


def test_service_account_identity_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from sentient_operator.credentials.service_account import _service_account_identity

    monkeypatch.setenv("SENTIENT_SERVICE_ACCOUNT", "ops/sentient")
    assert _service_account_identity() == ("ops", "sentient")
    monkeypatch.setenv("SENTIENT_SERVICE_ACCOUNT", "sentient")
    monkeypatch.setenv("SENTIENT_OPERATOR_NAMESPACE", "sentient-system")
    assert _service_account_identity() == ("sentient-system", "sentient")


@pytest.mark.parametrize(
    "token",
    [
        "hvs.first-line\nhvs.second-line",  # two tokens pasted into one key
        "hvs.\u20acuro",  # not latin-1: cannot be an HTTP header at all
        "hvs.tab\tinside",
    ],
    ids=["newline", "non-ascii", "tab"],
)
def test_malformed_token_is_malformed_and_never_quoted(bao: OpenBao, token: str) -> None:
    """A token that cannot be sent as a header is the Secret's fault, not the network's: Malformed,
    naming the Secret and key, without the token (requests' own error quotes the header value)."""
    store = Secrets()
    store.put(NS, "vault-token", token=token)
    with pytest.raises(Malformed) as err:
        source(token_spec(bao.url), store).fetch()
    message = str(err.value)
    assert "vault-token" in message and "'token'" in message
    for part in token.split():
        assert part not in message
    # Raised before any HTTP call: no chained client error quoting the header either.
    assert err.value.__context__ is None
