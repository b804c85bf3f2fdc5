"""Provider credentials from a Kubernetes Secret on the local control plane: sync, status,
rotation through the Secret watch, a deleted source keeping the last good value, recovery."""

from __future__ import annotations

import base64
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.operator_proc import OperatorProcess
from sentient_operator.credentials.fingerprint import fingerprint_data
from tests.support.kube_helpers import (
    condition,
    condition_is,
    create_provider,
    delete_secret,
    events,
    get_provider,
    put_secret,
    secret_object,
    secret_value,
)
from tests.support.waiting import wait_for


@pytest.fixture
def operator(cluster: Any, crds: list[str], namespace: str) -> Iterator[OperatorProcess]:
    with OperatorProcess(cluster.kubeconfig, [namespace], leader_election=False, log_format="text") as op:
        yield op


def test_secret_source_sync_rotation_and_faults(k8s: Any, namespace: str, operator: OperatorProcess) -> None:
    put_secret(k8s, namespace, "openai-key", {"apiKey": "sk-e2e-first"})
    create_provider(
        k8s,
        namespace,
        "openai",
        {"type": "openai", "credentials": {"secretRef": {"name": "openai-key", "key": "apiKey"}}},
    )
    wait_for(
        lambda: secret_value(k8s, namespace, "sentient-provider-openai") == "sk-e2e-first", "provider Secret"
    )
    wait_for(lambda: condition_is(k8s, namespace, "openai", "CredentialsSynced", "True", "Synced"), "synced")
    provider = get_provider(k8s, namespace, "openai")
    status = provider["status"]
    fp = status["credentialsFingerprint"]
    assert fp.startswith("hmac-sha256:") and status["lastSyncTime"]
    assert condition(provider, "Ready")["status"] == "True"  # type: ignore[index]
    secret = secret_object(k8s, namespace, "sentient-provider-openai")
    assert secret is not None
    assert secret["metadata"]["annotations"]["sentient.dev/credentials-fingerprint"] == fp
    assert secret["metadata"]["labels"]["sentient.dev/provider"] == "openai"
    owner = secret["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "LLMProvider",
        "openai",
        provider["metadata"]["uid"],
    )
    # The fingerprint is the keyed HMAC under the operator's key Secret, not a plain hash.
    key_secret = secret_object(k8s, namespace, "sentient-operator-fingerprint-key")
    assert key_secret is not None
    hmac_key = base64.b64decode(key_secret["data"]["key"])
    assert len(hmac_key) == 32
    assert fp == fingerprint_data(hmac_key, {"apiKey": "sk-e2e-first"})
    # The provider has no finalizer: deleting it never waits for the operator.
    assert not provider["metadata"].get("finalizers")

    # Rotation: edit the source Secret; the watch picks it up.
    edited = time.monotonic()
    put_secret(k8s, namespace, "openai-key", {"apiKey": "sk-e2e-second"})
    wait_for(lambda: secret_value(k8s, namespace, "sentient-provider-openai") == "sk-e2e-second", "rotation")
    print(f"\nKubernetes Secret edit -> provider Secret updated: {time.monotonic() - edited:.2f}s")
    wait_for(
        lambda: get_provider(k8s, namespace, "openai")["status"]["credentialsFingerprint"] != fp,
        "new fingerprint",
    )

    # Fault: the source key disappears, then the whole Secret; the last good value stays.
    put_secret(k8s, namespace, "openai-key", {"other": "x"})
    wait_for(
        lambda: condition_is(k8s, namespace, "openai", "CredentialsSynced", "False", "KeyNotFound"),
        "KeyNotFound",
    )
    delete_secret(k8s, namespace, "openai-key")
    wait_for(
        lambda: condition_is(k8s, namespace, "openai", "CredentialsSynced", "False", "SecretNotFound"),
        "SecretNotFound",
    )
    assert secret_value(k8s, namespace, "sentient-provider-openai") == "sk-e2e-second"
    ready = condition(get_provider(k8s, namespace, "openai"), "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("True", "ServingLastGoodCredentials")
    warnings = wait_for(
        lambda: [e for e in events(k8s, namespace) if e.get("reason") == "SecretNotFound"],
        "SecretNotFound Event",
    )
    assert warnings[0]["type"] == "Warning" and "sk-e2e" not in warnings[0]["message"]

    # Recovery by itself when the Secret comes back.
    put_secret(k8s, namespace, "openai-key", {"apiKey": "sk-e2e-third"})
    wait_for(lambda: secret_value(k8s, namespace, "sentient-provider-openai") == "sk-e2e-third", "recovery")
    wait_for(
        lambda: condition_is(k8s, namespace, "openai", "CredentialsSynced", "True", "Synced"), "synced again"
    )

    # The syncs show up in the operator's metrics (without any value, of course).
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert 'sentient_operator_reconciles_total{kind="LLMProvider",result="ok"}' in text
    assert 'sentient_operator_reconcile_errors_total{kind="LLMProvider",reason="SecretNotFound"}' in text
    labels = f'namespace="{namespace}",provider="openai"'
    assert f'sentient_operator_credential_syncs_total{{{labels},result="success"}}' in text
    assert f'sentient_operator_credential_syncs_total{{{labels},result="error"}}' in text
    assert f"sentient_operator_credential_last_sync_timestamp_seconds{{{labels}}}" in text
    assert "sk-e2e" not in text


def test_provider_secret_edited_by_hand_is_restored(
    k8s: Any, namespace: str, operator: OperatorProcess
) -> None:
    put_secret(k8s, namespace, "key", {"apiKey": "sk-e2e-restore"})
    create_provider(
        k8s,
        namespace,
        "p",
        {"type": "openai", "credentials": {"secretRef": {"name": "key", "key": "apiKey"}}},
    )
    wait_for(
        lambda: secret_value(k8s, namespace, "sentient-provider-p") == "sk-e2e-restore", "provider Secret"
    )
    from kubernetes import client as kc

    kc.CoreV1Api(k8s).patch_namespaced_secret(
        "sentient-provider-p", namespace, {"stringData": {"apiKey": "tampered"}}
    )
    wait_for(lambda: secret_value(k8s, namespace, "sentient-provider-p") == "sk-e2e-restore", "restored")


def test_fingerprint_key_is_created_once_under_a_race(
    cluster: Any, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from sentient_operator import kube
    from sentient_operator.credentials.fingerprint import load_or_create_key

    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    kube.configure(kube.login())

    async def race() -> tuple[list[bytes], bytes]:
        # Four replicas at once: all four read "not found" before any of them creates the Secret.
        try:
            keys = await asyncio.gather(*(load_or_create_key(namespace) for _ in range(4)))
            return list(keys), await load_or_create_key(namespace)
        finally:
            await kube.close()

    try:
        keys, again = asyncio.run(race())
    finally:
        kube.configure(None)
    assert len(set(keys)) == 1 and len(keys[0]) == 32
    assert again == keys[0]


def test_secret_reader_from_a_thread_with_and_without_the_operator_loop(
    k8s: Any, cluster: Any, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The blocking reader (credential sources run in threads) goes through the operator's loop
    while it runs, and through a loop of its own otherwise; a missing Secret reads as None."""
    import asyncio

    from sentient_operator import kube
    from sentient_operator.credentials.kubernetes import kube_secret_reader

    put_secret(k8s, namespace, "reader-src", {"apiKey": "sk-thread"})
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    kube.configure(kube.login())
    read = kube_secret_reader()
    try:
        # No operator loop: a loop (and a session) of its own, closed after the request.
        assert read(namespace, "reader-src") == {"apiKey": b"sk-thread"}
        assert read(namespace, "no-such-secret") is None

        async def operator_loop() -> tuple[Any, Any]:
            await kube.call("GET", f"/api/v1/namespaces/{namespace}")  # the shared session exists
            try:
                return await asyncio.gather(
                    asyncio.to_thread(read, namespace, "reader-src"),
                    asyncio.to_thread(read, namespace, "no-such-secret"),
                )
            finally:
                await kube.close()

        found, missing = asyncio.run(operator_loop())
        assert found == {"apiKey": b"sk-thread"} and missing is None
    finally:
        kube.configure(None)
