"""Provider credentials from OpenBao with kubernetes auth on the local control plane.

The operator logs in with its service account's token (TokenRequest, as when it runs outside a
pod); OpenBao verifies that token with the apiserver's TokenReview API, using a reviewer service
account bound to system:auth-delegator. Then: refresh picks up a rotation in the store, an
unreachable store keeps the last good provider Secret, and the sync recovers by itself.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.operator_proc import OperatorProcess
from tests.support.fault_proxy import FaultProxy
from tests.support.kube_helpers import (
    bind_cluster_role,
    cluster_ca_pem,
    condition,
    condition_is,
    create_provider,
    get_provider,
    secret_value,
    service_account_token,
    unbind_cluster_role,
)
from tests.support.openbao import OpenBao, bao_binary
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(bao_binary() is None, reason="bao not installed (python -m e2e.tools ensure)")

OPERATOR_SA = "sentient-operator"


@pytest.fixture
def bao(cluster: Any, k8s: Any, namespace: str) -> Iterator[OpenBao]:
    binding = f"vault-reviewer-{namespace}"
    with OpenBao() as server:
        reviewer = service_account_token(k8s, namespace, "vault-reviewer")
        bind_cluster_role(k8s, binding, "system:auth-delegator", namespace, "vault-reviewer")
        server.client().sys.create_or_update_policy(
            name="read-llm", policy='path "secret/data/llm/*" { capabilities = ["read"] }'
        )
        server.enable_kubernetes_auth(
            host=cluster.server,
            ca_pem=cluster_ca_pem(cluster.kubeconfig),
            reviewer_jwt=reviewer,
            role="sentient",
            service_account=OPERATOR_SA,
            namespace=namespace,
            policies=["read-llm"],
        )
        try:
            yield server
        finally:
            unbind_cluster_role(k8s, binding)


def test_vault_kubernetes_auth_refresh_and_unreachable(
    cluster: Any, crds: list[str], k8s: Any, namespace: str, bao: OpenBao
) -> None:
    service_account_token(k8s, namespace, OPERATOR_SA)  # creates the operator's service account
    kv = bao.client().secrets.kv.v2
    first = f"sk-vault-{secrets.token_hex(6)}"
    kv.create_or_update_secret(path="llm/openai", secret={"apiKey": first})
    with (
        FaultProxy(bao.url) as proxy,
        OperatorProcess(
            cluster.kubeconfig,
            [namespace],
            leader_election=False,
            log_format="text",
            env={"SENTIENT_SERVICE_ACCOUNT": f"{namespace}/{OPERATOR_SA}"},
        ) as op,
    ):
        create_provider(
            k8s,
            namespace,
            "vaulted",
            {
                "type": "openai",
                "credentials": {
                    "vault": {
                        "server": proxy.url,
                        "path": "llm/openai",
                        "auth": {"kubernetes": {"role": "sentient"}},
                    },
                    "refreshInterval": "10s",
                },
            },
        )
        wait_for(
            lambda: secret_value(k8s, namespace, "sentient-provider-vaulted") == first, "provider Secret"
        )
        # The status follows the provider Secret (written right after it).
        wait_for(
            lambda: (
                (get_provider(k8s, namespace, "vaulted").get("status") or {}).get("credentialsVersion") == "1"
            ),
            "credentialsVersion in status",
        )

        # Rotation in the store, picked up on the next refresh.
        second = f"sk-vault-{secrets.token_hex(6)}"
        edited = time.monotonic()
        kv.create_or_update_secret(path="llm/openai", secret={"apiKey": second})
        wait_for(lambda: secret_value(k8s, namespace, "sentient-provider-vaulted") == second, "rotation")
        print(
            f"\nVault edit -> provider Secret updated (refreshInterval 10s): {time.monotonic() - edited:.2f}s"
        )

        # A user who just rotated can ask for a sync now instead of waiting for the refresh.
        third = f"sk-vault-{secrets.token_hex(6)}"
        kv.create_or_update_secret(path="llm/openai", secret={"apiKey": third})
        edited = time.monotonic()
        cluster.kubectl(
            "-n", namespace, "annotate", "llmprovider", "vaulted", "sentient.dev/force-sync=1", "--overwrite"
        )
        wait_for(lambda: secret_value(k8s, namespace, "sentient-provider-vaulted") == third, "forced sync")
        print(
            f"Vault edit + force-sync annotation -> provider Secret updated: {time.monotonic() - edited:.2f}s"
        )

        # The store goes away: condition says so, the last good value stays, recovery is automatic.
        proxy.mode = "reset"
        wait_for(
            lambda: condition_is(k8s, namespace, "vaulted", "CredentialsSynced", "False", "StoreUnreachable"),
            "StoreUnreachable",
        )
        assert secret_value(k8s, namespace, "sentient-provider-vaulted") == third
        ready = condition(get_provider(k8s, namespace, "vaulted"), "Ready")
        assert ready is not None and ready["status"] == "True"
        proxy.mode = "pass"
        wait_for(
            lambda: condition_is(k8s, namespace, "vaulted", "CredentialsSynced", "True", "Synced"),
            "recovered",
        )
        assert not any(v in op.log_text() for v in (first, second, third))
