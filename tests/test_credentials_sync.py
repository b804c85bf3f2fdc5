"""The shared fetcher (single flight, backoff) and the provider syncer against real stores:
every fault leaves the last good provider Secret untouched and reports the right reason."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import pytest

from sentient_operator.api.v1alpha1 import CredentialsSource, LLMProviderSpec
from sentient_operator.conditions import find_condition
from sentient_operator.credentials.base import StoreUnreachable, Throttled
from sentient_operator.credentials.fingerprint import FINGERPRINT_ANNOTATION
from sentient_operator.credentials.sync import (
    Backoff,
    ProviderSyncer,
    SharedFetcher,
    build_source,
    referenced_secrets,
    source_key,
)
from tests.support.credentials import ProviderSecretStore, Secrets, provider_body
from tests.support.fault_proxy import FaultProxy
from tests.support.openbao import OpenBao, bao_binary

NS = "team"
KEY = b"k" * 32
READ_ALL = 'path "secret/*" { capabilities = ["read"] }'


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def fixed_key() -> bytes:
    return KEY


def make_syncer(store: Secrets, out: ProviderSecretStore, fetcher: SharedFetcher) -> ProviderSyncer:
    return ProviderSyncer(
        fetcher=fetcher, reader=store.reader, apply=out.apply, get_secret=out.get, fingerprint_key=fixed_key
    )


def condition(outcome_status: dict[str, Any], type_: str) -> dict[str, Any]:
    cond = find_condition(outcome_status["conditions"], type_)
    assert cond is not None
    return dict(cond)


# --------------------------------------------------------------------------- backoff


def test_backoff_grows_with_jitter_and_respects_throttling() -> None:
    b = Backoff(base=1.0, factor=2.0, cap=60.0, throttle_min=5.0)
    rng = random.Random(7)
    err = StoreUnreachable("x")
    for n, full in [(1, 1.0), (2, 2.0), (3, 4.0), (10, 60.0)]:
        for _ in range(20):
            assert full / 2 <= b.delay(n, err, rng) <= full
    thr = Throttled("x", retry_after=30.0)
    assert b.delay(1, thr, rng) >= 30.0
    assert b.delay(1, Throttled("x"), rng) >= 2.5


# --------------------------------------------------------------------------- Kubernetes-Secret source


def k8s_spec(name: str = "openai", key: str = "apiKey") -> dict[str, Any]:
    return {"type": "openai", "credentials": {"secretRef": {"name": name, "key": key}}}


async def test_sync_writes_provider_secret_once_and_only_on_change() -> None:
    store, out = Secrets(), ProviderSecretStore()
    store.put(NS, "openai", apiKey="sk-live-1")
    syncer = make_syncer(store, out, SharedFetcher())
    body = provider_body("openai", NS, k8s_spec())
    first = await syncer.sync(body, force=True)
    assert first.ok and first.changed
    assert out.value(NS, "sentient-provider-openai") == "sk-live-1"
    secret = out.objects[(NS, "sentient-provider-openai")]
    assert secret["metadata"]["annotations"][FINGERPRINT_ANNOTATION] == first.fingerprint
    assert secret["metadata"]["labels"]["sentient.dev/provider"] == "openai"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-openai"
    assert first.status["credentialsFingerprint"] == first.fingerprint
    assert "sk-live" not in str(first.status)
    # Same value: no write (no resourceVersion bump, so no agent reconcile storm).
    again = await syncer.sync(body, force=True)
    assert again.ok and not again.changed and out.applies == 1
    store.put(NS, "openai", apiKey="sk-live-2")
    rotated = await syncer.sync(body, force=True)
    assert rotated.changed and rotated.fingerprint != first.fingerprint
    assert out.value(NS, "sentient-provider-openai") == "sk-live-2"


async def test_missing_secret_or_key_keeps_last_good() -> None:
    store, out = Secrets(), ProviderSecretStore()
    store.put(NS, "openai", apiKey="sk-good")
    syncer = make_syncer(store, out, SharedFetcher())
    body = provider_body("openai", NS, k8s_spec())
    assert (await syncer.sync(body, force=True)).ok
    store.put(NS, "openai", other="x")
    missing_key = await syncer.sync(body, force=True)
    assert missing_key.reason == "KeyNotFound"
    store.delete(NS, "openai")
    missing = await syncer.sync(body, force=True)
    assert missing.reason == "SecretNotFound"
    assert out.applies == 1 and out.value(NS, "sentient-provider-openai") == "sk-good"
    synced = condition(missing.status, "CredentialsSynced")
    ready = condition(missing.status, "Ready")
    assert (synced["status"], synced["reason"]) == ("False", "SecretNotFound")
    assert (ready["status"], ready["reason"]) == ("True", "ServingLastGoodCredentials")
    assert "lastSyncTime" not in missing.status and "credentialsFingerprint" not in missing.status


async def test_first_sync_failure_is_not_ready() -> None:
    out = ProviderSecretStore()
    syncer = make_syncer(Secrets(), out, SharedFetcher())
    outcome = await syncer.sync(provider_body("openai", NS, k8s_spec()), force=True)
    ready = condition(outcome.status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "SecretNotFound")
    assert out.applies == 0


async def test_a_stored_spec_the_schema_now_refuses_names_the_fields_not_the_values() -> None:
    """A provider stored before a rule was added (an endpoint with credentials in it, say) is
    InvalidSpec naming the field, so the user knows what to fix; never the value."""
    out = ProviderSecretStore()
    syncer = make_syncer(Secrets(), out, SharedFetcher())
    spec = {**k8s_spec(), "endpoint": "https://u:sk-in-url-123@models.local/v1", "retry": {"maxAttempts": 0}}
    outcome = await syncer.sync(provider_body("openai", NS, spec), force=True)
    synced = condition(outcome.status, "CredentialsSynced")
    assert (synced["status"], synced["reason"]) == ("False", "InvalidSpec")
    assert "spec.endpoint" in synced["message"] and "spec.retry.maxAttempts" in synced["message"]
    assert "sk-in-url-123" not in str(outcome.status)
    assert out.applies == 0


async def test_keyless_provider_and_ca_bundle() -> None:
    store, out = Secrets(), ProviderSecretStore()
    syncer = make_syncer(store, out, SharedFetcher())
    keyless = await syncer.sync(
        provider_body("local", NS, {"type": "openai-compatible", "endpoint": "http://127.0.0.1:1/v1"})
    )
    assert keyless.ok and keyless.reason == "NoCredentials" and out.applies == 0
    store.put(NS, "openai", apiKey="sk-ca")
    store.put(NS, "ca", pem="-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----")
    spec = k8s_spec() | {"tls": {"caSecretRef": {"name": "ca", "key": "pem"}}}
    outcome = await syncer.sync(provider_body("openai", NS, spec), force=True)
    assert outcome.ok
    assert (out.value(NS, "sentient-provider-openai", "ca.pem") or "").startswith(
        "-----BEGIN CERTIFICATE-----"
    )
    assert referenced_secrets(NS, LLMProviderSpec.model_validate(spec)) == ["ca", "openai"]


async def test_single_flight_shares_one_fetch() -> None:
    store = Secrets()
    store.put(NS, "openai", apiKey="sk-shared")
    fetcher = SharedFetcher(reuse_window=30.0)
    creds = CredentialsSource.model_validate({"secretRef": {"name": "openai", "key": "apiKey"}})
    key = source_key(NS, creds)
    results = await asyncio.gather(
        *[fetcher.fetch(key, lambda: build_source(NS, creds, store.reader)) for _ in range(10)]
    )
    assert {r.value for r in results} == {"sk-shared"}
    assert fetcher.calls(key) == 1 and store.reads == 1


async def test_two_providers_with_the_same_source_share_it() -> None:
    store, out = Secrets(), ProviderSecretStore()
    store.put(NS, "openai", apiKey="sk-both")
    fetcher = SharedFetcher(reuse_window=30.0)
    syncer = make_syncer(store, out, fetcher)
    spec = {
        "type": "openai",
        "credentials": {"secretRef": {"name": "openai", "key": "apiKey"}, "refreshInterval": "10m"},
    }
    await syncer.sync(provider_body("a", NS, spec))
    await syncer.sync(provider_body("b", NS, spec))
    assert store.reads == 1
    assert out.value(NS, "sentient-provider-a") == out.value(NS, "sentient-provider-b") == "sk-both"


async def test_backoff_spares_the_store_until_due_and_force_bypasses() -> None:
    store = Secrets()
    clock = Clock()
    fetcher = SharedFetcher(Backoff(base=10.0), clock=clock, rng=random.Random(1))
    creds = CredentialsSource.model_validate({"secretRef": {"name": "openai", "key": "apiKey"}})
    key = source_key(NS, creds)

    def factory() -> Any:
        return build_source(NS, creds, store.reader)

    for _ in range(3):
        with pytest.raises(Exception, match="not found"):
            await fetcher.fetch(key, factory)
    assert fetcher.calls(key) == 1  # the 2nd and 3rd calls were inside the backoff window
    assert 5.0 <= fetcher.retry_in(key) <= 10.0
    clock.now += 10.0
    with pytest.raises(Exception, match="not found"):
        await fetcher.fetch(key, factory)
    assert fetcher.calls(key) == 2 and fetcher.failures(key) == 2
    assert 10.0 <= fetcher.retry_in(key) <= 20.0
    store.put(NS, "openai", apiKey="sk-back")
    assert (await fetcher.fetch(key, factory, force=True)).value == "sk-back"
    assert fetcher.failures(key) == 0 and fetcher.retry_in(key) == 0


# --------------------------------------------------------------------------- Vault: every fault


@pytest.fixture(scope="module")
def bao() -> Iterator[OpenBao]:
    if bao_binary() is None:
        pytest.skip("bao not installed (python -m e2e.tools ensure)")
    with OpenBao() as server:
        yield server


async def test_vault_faults_keep_last_good_and_recover(bao: OpenBao) -> None:
    kv = bao.client().secrets.kv.v2
    kv.create_or_update_secret(path="sync/openai", secret={"apiKey": "sk-vault-good"})
    store, out = Secrets(), ProviderSecretStore()
    good_token = bao.token_with_policy("read-all", READ_ALL)
    store.put(NS, "vt", token=good_token)
    with FaultProxy(bao.url) as proxy:
        spec = {
            "type": "openai",
            "credentials": {
                "vault": {
                    "server": proxy.url,
                    "path": "sync/openai",
                    "auth": {"token": {"secretRef": {"name": "vt", "key": "token"}}},
                },
                "refreshInterval": "30s",
            },
        }
        body = provider_body("vp", NS, spec)
        syncer = make_syncer(store, out, SharedFetcher(Backoff(base=0.001, throttle_min=0.001)))
        ok = await syncer.sync(body, force=True)
        assert ok.ok and ok.external and ok.refresh_interval == 30.0
        assert ok.status["credentialsVersion"] == "1"
        good_fp = ok.fingerprint

        async def expect(reason: str) -> None:
            outcome = await syncer.sync(body, force=True)
            assert not outcome.ok and outcome.reason == reason
            assert condition(outcome.status, "CredentialsSynced")["reason"] == reason
            assert condition(outcome.status, "Ready")["status"] == "True"
            assert out.applies == 1 and out.value(NS, "sentient-provider-vp") == "sk-vault-good"
            live = out.objects[(NS, "sentient-provider-vp")]
            assert live["metadata"]["annotations"][FINGERPRINT_ANNOTATION] == good_fp
            assert "sk-vault" not in str(outcome.status) and good_token not in str(outcome.status)

        proxy.mode = "reset"
        await expect("StoreUnreachable")
        proxy.mode = "pass"

        store.put(NS, "vt", token=bao.token_with_policy("none", 'path "sys/x" { capabilities = ["read"] }'))
        await expect("PermissionDenied")
        store.put(NS, "vt", token=good_token)

        kv.create_or_update_secret(path="sync/openai", secret={"other": "x"})
        await expect("KeyNotFound")
        kv.create_or_update_secret(path="sync/openai", secret={"apiKey": {"nested": True}})
        await expect("Malformed")
        kv.delete_metadata_and_all_versions(path="sync/openai")
        await expect("SecretNotFound")

        kv.create_or_update_secret(path="sync/openai", secret={"apiKey": "sk-vault-new"})
        c = bao.client()
        c.write_data(
            "sys/quotas/rate-limit/sync",
            data={"path": "secret/data/sync/openai", "rate": 1, "interval": "1h"},
        )
        try:
            first = await syncer.sync(body, force=True)  # the quota's one request
            assert first.ok and out.value(NS, "sentient-provider-vp") == "sk-vault-new"
            applies = out.applies
            throttled = await syncer.sync(body, force=True)
            assert throttled.reason == "Throttled" and out.applies == applies
            assert out.value(NS, "sentient-provider-vp") == "sk-vault-new"
        finally:
            c.delete("sys/quotas/rate-limit/sync")
        recovered = await syncer.sync(body, force=True)
        assert recovered.ok and condition(recovered.status, "CredentialsSynced")["reason"] == "Synced"
