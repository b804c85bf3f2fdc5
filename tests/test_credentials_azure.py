"""Azure Key Vault source against the project's TLS Key Vault server (lowkey-vault's app jar is
not on Maven Central): bearer challenge, client secret, workload identity, default credential,
version pinning, faults."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sentient_operator.api.v1alpha1 import AzureKeyVaultSource
from sentient_operator.credentials.azure import AzureKeyVaultCredentialSource
from sentient_operator.credentials.base import PermissionDenied, SecretNotFound, StoreUnreachable, Throttled
from tests.support.azure_keyvault import AzureKeyVaultServer
from tests.support.credentials import Secrets

NS = "team"


@pytest.fixture(scope="module")
def kv() -> Iterator[AzureKeyVaultServer]:
    with AzureKeyVaultServer() as server:
        server.add_client("app", "client-secret-1")
        server.add_client("federated", None)
        server.set_secret("openai", "sk-az-1")
        yield server


@pytest.fixture
def store() -> Secrets:
    s = Secrets()
    s.put(NS, "azure-sp", clientSecret="client-secret-1")
    return s


def source(kv: AzureKeyVaultServer, store: Secrets, **fields: object) -> AzureKeyVaultCredentialSource:
    spec: dict[str, object] = {
        "vaultURL": kv.url,
        "secretName": "openai",
        "auth": {
            "clientSecret": {
                "tenantId": kv.tenant_id,
                "clientId": "app",
                "secretRef": {"name": "azure-sp", "key": "clientSecret"},
            }
        },
    }
    spec.update(fields)
    return AzureKeyVaultCredentialSource(
        AzureKeyVaultSource.model_validate(spec),
        NS,
        store.reader,
        authority_host=kv.authority,
        connection_verify=kv.ca_file,
    )


def test_latest_and_pinned_versions(kv: AzureKeyVaultServer, store: Secrets) -> None:
    kv.set_secret("pinned", "sk-first")
    first = kv.set_secret("pinned", "sk-first")
    latest = source(kv, store, secretName="pinned")
    assert latest.fetch().value == "sk-first"
    kv.set_secret("pinned", "sk-second")
    got = latest.fetch()
    assert got.value == "sk-second"
    assert got.version and got.version != first
    pinned = source(kv, store, secretName="pinned", version=first)
    assert pinned.fetch().value == "sk-first"
    assert pinned.fetch().version == first


def test_token_is_cached_between_fetches(kv: AzureKeyVaultServer, store: Secrets) -> None:
    src = source(kv, store)
    src.fetch()
    before = kv.state.token_requests
    src.fetch()
    src.fetch()
    assert kv.state.token_requests == before


def test_workload_identity(kv: AzureKeyVaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text("header.payload.signature")
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    src = source(
        kv,
        Secrets(),
        auth={"workloadIdentity": {"tenantId": kv.tenant_id, "clientId": "federated"}},
    )
    assert src.fetch().value == "sk-az-1"


def test_default_credential_from_environment(
    kv: AzureKeyVaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_TENANT_ID", kv.tenant_id)
    monkeypatch.setenv("AZURE_CLIENT_ID", "app")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "client-secret-1")
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", kv.authority)
    src = source(kv, Secrets(), auth={"default": True})
    assert src.fetch().value == "sk-az-1"


def test_missing_secret_and_version(kv: AzureKeyVaultServer, store: Secrets) -> None:
    with pytest.raises(SecretNotFound):
        source(kv, store, secretName="absent").fetch()
    with pytest.raises(SecretNotFound):
        source(kv, store, version="0" * 32).fetch()


def test_denied_and_wrong_client_secret(kv: AzureKeyVaultServer, store: Secrets) -> None:
    kv.add_client("locked-out", "ls")
    kv.deny("locked-out")
    store.put(NS, "locked", clientSecret="ls")
    auth = {
        "clientSecret": {
            "tenantId": kv.tenant_id,
            "clientId": "locked-out",
            "secretRef": {"name": "locked", "key": "clientSecret"},
        }
    }
    with pytest.raises(PermissionDenied):
        source(kv, store, auth=auth).fetch()
    store.put(NS, "azure-sp", clientSecret="wrong-secret")
    with pytest.raises(PermissionDenied) as err:
        source(kv, store).fetch()
    assert "wrong-secret" not in str(err.value)


def test_rotated_client_secret_is_picked_up(kv: AzureKeyVaultServer, store: Secrets) -> None:
    kv.add_client("rotating-app", "old")
    store.put(NS, "rot", clientSecret="old")
    auth = {
        "clientSecret": {
            "tenantId": kv.tenant_id,
            "clientId": "rotating-app",
            "secretRef": {"name": "rot", "key": "clientSecret"},
        }
    }
    src = source(kv, store, auth=auth)
    assert src.fetch().value == "sk-az-1"
    kv.add_client("rotating-app", "new")
    store.put(NS, "rot", clientSecret="new")
    assert src.fetch().value == "sk-az-1"


def test_throttled_unreachable_and_recovery(kv: AzureKeyVaultServer, store: Secrets) -> None:
    src = source(kv, store)
    assert src.fetch().value == "sk-az-1"
    try:
        kv.fault = "throttle"
        with pytest.raises(Throttled) as err:
            src.fetch()
        assert err.value.retry_after == 1.0
        kv.fault = "reset"
        with pytest.raises(StoreUnreachable):
            src.fetch()
    finally:
        kv.fault = None
    assert src.fetch().value == "sk-az-1"
