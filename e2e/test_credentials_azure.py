"""Provider credentials from Azure Key Vault on the local control plane, through the real SDKs
(azure-identity client-secret flow with the bearer challenge) against the project's TLS Key
Vault server: sync, a new version picked up on refresh, a pinned version, throttling and
revoked access keeping the last good provider Secret."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.operator_proc import OperatorProcess
from tests.support.azure_keyvault import AzureKeyVaultServer
from tests.support.kube_helpers import (
    condition_is,
    create_provider,
    get_provider,
    put_secret,
    secret_value,
)
from tests.support.waiting import wait_for


@pytest.fixture
def kv() -> Iterator[AzureKeyVaultServer]:
    with AzureKeyVaultServer() as server:
        server.add_client("sentient", "client-secret")
        yield server


def _spec(kv: AzureKeyVaultServer, **extra: Any) -> dict[str, Any]:
    source = {
        "vaultURL": kv.url,
        "secretName": "openai",
        "auth": {
            "clientSecret": {
                "tenantId": kv.tenant_id,
                "clientId": "sentient",
                "secretRef": {"name": "azure-sp", "key": "clientSecret"},
            }
        },
        **extra,
    }
    return {"type": "openai", "credentials": {"azureKeyVault": source, "refreshInterval": "2s"}}


def test_azure_key_vault_sync_refresh_pin_and_faults(
    cluster: Any, crds: list[str], k8s: Any, namespace: str, kv: AzureKeyVaultServer
) -> None:
    first = f"sk-az-{secrets.token_hex(6)}"
    first_version = kv.set_secret("openai", first)
    put_secret(k8s, namespace, "azure-sp", {"clientSecret": "client-secret"})
    env = {"SENTIENT_AZURE_AUTHORITY_HOST": kv.authority, "REQUESTS_CA_BUNDLE": kv.ca_file}
    with OperatorProcess(
        cluster.kubeconfig, [namespace], leader_election=False, log_format="text", env=env
    ) as op:
        create_provider(k8s, namespace, "latest", _spec(kv))
        create_provider(k8s, namespace, "pinned", _spec(kv, version=first_version))
        wait_for(lambda: secret_value(k8s, namespace, "sentient-provider-latest") == first, "latest synced")
        wait_for(lambda: secret_value(k8s, namespace, "sentient-provider-pinned") == first, "pinned synced")
        wait_for(
            lambda: (
                (get_provider(k8s, namespace, "latest").get("status") or {}).get("credentialsVersion")
                == first_version
            ),
            "version in status",
        )

        second = f"sk-az-{secrets.token_hex(6)}"
        second_version = kv.set_secret("openai", second)
        wait_for(lambda: secret_value(k8s, namespace, "sentient-provider-latest") == second, "new version")
        wait_for(
            lambda: (
                (get_provider(k8s, namespace, "latest").get("status") or {}).get("credentialsVersion")
                == second_version
            ),
            "version in status",
        )
        assert secret_value(k8s, namespace, "sentient-provider-pinned") == first

        kv.fault = "throttle"
        wait_for(
            lambda: condition_is(k8s, namespace, "latest", "CredentialsSynced", "False", "Throttled"),
            "Throttled",
        )
        kv.fault = None
        wait_for(
            lambda: condition_is(k8s, namespace, "latest", "CredentialsSynced", "True", "Synced"), "recovered"
        )

        kv.deny("sentient")
        wait_for(
            lambda: condition_is(k8s, namespace, "latest", "CredentialsSynced", "False", "PermissionDenied"),
            "PermissionDenied",
        )
        assert secret_value(k8s, namespace, "sentient-provider-latest") == second
        assert secret_value(k8s, namespace, "sentient-provider-pinned") == first
        log = op.log_text()
        assert first not in log and second not in log and "client-secret" not in log
