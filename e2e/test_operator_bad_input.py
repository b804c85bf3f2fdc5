"""Bad input after admission, on the local control plane: what a user sees when something an agent,
a provider or a policy references is missing or broken, and that it mends itself.

Each case: the condition names the fault with a reason (no crash loop, no trace in the status), a
secret value never reaches a status or an Event, and once the missing thing appears the resource
becomes Ready without anyone touching it. Also the status conventions every kind shares
(``kubectl wait --for=condition=Ready``, observedGeneration, lastTransitionTime) and that deletion
never waits on the operator (no finalizers).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agent_runtime.testing import run_fake
from e2e.agents import PROVIDER_KEY, agent, callers, provider, wait_ready
from e2e.operator_proc import OperatorProcess, running_operator
from e2e.resources import apply, condition, events, get
from tests.support.fault_proxy import FaultProxy
from tests.support.openbao import OpenBao, bao_binary
from tests.support.waiting import wait_for

REDIS_PASSWORD = f"hunter2-{secrets.token_hex(4)}"
CONDITION_FIELDS = {"type", "status", "reason", "message", "observedGeneration", "lastTransitionTime"}


@pytest.fixture
def fake_upstream() -> Iterator[Any]:
    with run_fake("openai", api_key=PROVIDER_KEY) as fake:
        yield fake


def secret(namespace: str, name: str, **data: str) -> dict[str, Any]:
    """A Secret manifest with ``data`` as stringData."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": data,
    }


def seed_vault(bao: OpenBao, api_key: str) -> str:
    """Store ``api_key`` at secret/llm/openai; a token that may read it."""
    bao.client().secrets.kv.v2.create_or_update_secret(path="llm/openai", secret={"apiKey": api_key})
    return bao.token_with_policy("read-llm", 'path "secret/data/llm/*" { capabilities = ["read"] }')


def vault_provider(namespace: str, server: str, **credentials: Any) -> dict[str, Any]:
    """LLMProvider ``vaulted`` reading secret/llm/openai with the token of Secret vault-token."""
    vault = {
        "server": server,
        "path": "llm/openai",
        "auth": {"token": {"secretRef": {"name": "vault-token", "key": "token"}}},
    }
    return {
        "apiVersion": "sentient.dev/v1alpha1",
        "kind": "LLMProvider",
        "metadata": {"name": "vaulted", "namespace": namespace},
        "spec": {"type": "openai", "credentials": {"vault": vault, **credentials}},
    }


def reason_of(cluster: Any, kind: str, name: str, namespace: str, type_: str) -> Callable[[], str | None]:
    """A poll of one condition's reason."""

    def poll() -> str | None:
        return condition(get(cluster, kind, name, namespace), type_).get("reason")

    return poll


def wait_reason(
    cluster: Any, kind: str, name: str, namespace: str, type_: str, reason: str
) -> dict[str, Any]:
    """Wait until ``type_`` has ``reason``; the object then."""
    poll = reason_of(cluster, kind, name, namespace, type_)
    wait_for(lambda: poll() == reason, timeout=60, what=f"{kind}/{name} {type_} reason {reason}")
    obj = get(cluster, kind, name, namespace)
    assert obj is not None
    return obj


def everything_said(cluster: Any, namespace: str, obj: dict[str, Any]) -> str:
    """The object's status and every Event of the namespace, as one text to search for leaks."""
    events = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    return json.dumps(obj.get("status") or {}) + events


def blocked_cleanly(
    cluster: Any, namespace: str, type_: str, reason: str, op: OperatorProcess
) -> dict[str, Any]:
    """Wait until the agent's ``type_`` condition says ``reason`` and Ready says it too (Ready names
    the first blocking problem: a provider's first sync may come first); check the rest."""
    wait_reason(cluster, "sentientagent", "helper", namespace, type_, reason)
    obj = wait_reason(cluster, "sentientagent", "helper", namespace, "Ready", reason)
    ready = condition(obj, "Ready")
    assert ready["status"] == "False"
    assert ready["observedGeneration"] == obj["metadata"]["generation"]
    assert condition(obj, type_)["status"] == "False"
    assert condition(obj, "Degraded")["status"] == "True"
    for cond in obj["status"]["conditions"]:
        assert "Traceback" not in cond["message"], cond
    assert ready["message"]
    assert op.alive
    return obj


def test_missing_policy_then_created(
    cluster: Any, crds: list[str], namespace: str, fake_upstream: Any
) -> None:
    with running_operator(cluster, namespace) as op:
        apply(
            cluster,
            *provider(namespace, fake_upstream.endpoint),
            callers(namespace),
            agent(namespace, rateLimitPolicyRef={"name": "later"}),
        )
        obj = blocked_cleanly(cluster, namespace, "ConfigResolved", "PolicyNotFound", op)
        assert f"{namespace}/later" in condition(obj, "Ready")["message"]
        # A Warning Event as for a missing provider, though the agent was never Ready.
        wait_for(
            lambda: events(cluster, namespace, "involvedObject.name=helper,reason=PolicyNotFound"),
            timeout=30,
            what="a PolicyNotFound Event",
        )

        # The policy appears: the agent becomes Ready by itself (nobody edits it).
        generation = obj["metadata"]["generation"]
        policy = {
            "apiVersion": "sentient.dev/v1alpha1",
            "kind": "RateLimitPolicy",
            "metadata": {"name": "later", "namespace": namespace},
            "spec": {"limits": {"requestsPerMinute": 60}},
        }
        apply(cluster, policy)
        obj = wait_ready(cluster, namespace)
        assert obj["metadata"]["generation"] == generation
        assert condition(obj, "ConfigResolved")["status"] == "True"
        assert all("Traceback" not in line for line in op.lines)


def test_missing_prompt_config_map_then_key_then_fixed(
    cluster: Any, crds: list[str], namespace: str, fake_upstream: Any
) -> None:
    with running_operator(cluster, namespace) as op:
        from_config_map = agent(namespace, systemPromptFrom={"name": "prompts", "key": "helper"})
        del from_config_map["spec"]["systemPrompt"]
        apply(cluster, *provider(namespace, fake_upstream.endpoint), callers(namespace), from_config_map)
        blocked_cleanly(cluster, namespace, "ConfigResolved", "ConfigMapNotFound", op)

        prompts: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "prompts", "namespace": namespace},
            "data": {"other": "You help someone else."},
        }
        apply(cluster, prompts)
        blocked_cleanly(cluster, namespace, "ConfigResolved", "ConfigMapKeyNotFound", op)

        prompts["data"]["helper"] = "You help."
        apply(cluster, prompts)
        wait_ready(cluster, namespace)
        config = get(cluster, "configmap", "helper-config", namespace)
        assert config is not None and "You help." in json.dumps(config["data"])


def test_missing_caller_secret_then_created(
    cluster: Any, crds: list[str], namespace: str, fake_upstream: Any
) -> None:
    with running_operator(cluster, namespace) as op:
        apply(cluster, *provider(namespace, fake_upstream.endpoint), agent(namespace))
        blocked_cleanly(cluster, namespace, "CredentialsReady", "SecretNotFound", op)
        assert get(cluster, "deployment", "helper", namespace) is None

        apply(cluster, callers(namespace))
        wait_ready(cluster, namespace)


def test_missing_secret_key_then_added(
    cluster: Any, crds: list[str], namespace: str, fake_upstream: Any
) -> None:
    """The sessions' Redis Secret exists without the key the agent names: SecretKeyNotFound, the
    other keys' values nowhere; the key is added and the agent becomes Ready by itself."""
    redis_url = f"redis://:{REDIS_PASSWORD}@redis.example:6379/0"
    redis_secret = secret(namespace, "sessions-redis", uri=redis_url)
    sessions = {"store": "redis", "redisSecretRef": {"name": "sessions-redis", "key": "url"}}
    with running_operator(cluster, namespace) as op:
        apply(
            cluster,
            *provider(namespace, fake_upstream.endpoint),
            callers(namespace),
            redis_secret,
            agent(namespace, sessions=sessions),
        )
        obj = blocked_cleanly(cluster, namespace, "CredentialsReady", "SecretKeyNotFound", op)
        assert "sessions-redis" in condition(obj, "CredentialsReady")["message"]
        said = everything_said(cluster, namespace, obj)
        assert REDIS_PASSWORD not in said and "redis://" not in said

        redis_secret["stringData"] = {"uri": redis_url, "url": redis_url}
        apply(cluster, redis_secret)
        wait_ready(cluster, namespace)
        assert all(REDIS_PASSWORD not in line for line in op.lines)


def test_provider_and_policy_support_kubectl_wait_and_mend_themselves(
    cluster: Any, crds: list[str], namespace: str
) -> None:
    """``kubectl wait --for=condition=Ready`` works on every kind, also after a fault mends."""
    redis_url = f"redis://:{REDIS_PASSWORD}@redis.example:6379/0"
    policy = {
        "apiVersion": "sentient.dev/v1alpha1",
        "kind": "RateLimitPolicy",
        "metadata": {"name": "shared", "namespace": namespace},
        "spec": {
            "limits": {"requestsPerMinute": 60},
            "backend": {"type": "redis", "redis": {"addressSecretRef": {"name": "redis", "key": "url"}}},
        },
    }
    # The wrong key first: the value must not show anywhere.
    redis_secret = secret(namespace, "redis", uri=redis_url)
    docs = provider(namespace, "http://127.0.0.1:9/v1", name="keyed")
    key_secret, llm_provider = docs
    with running_operator(cluster, namespace) as op:
        apply(cluster, policy, llm_provider)
        obj = wait_reason(cluster, "ratelimitpolicy", "shared", namespace, "Ready", "SecretNotFound")
        assert condition(obj, "Ready")["observedGeneration"] == obj["metadata"]["generation"]
        # kubectl describe rlp says it too, as it does for the other kinds.
        [warning] = wait_for(
            lambda: events(cluster, namespace, "involvedObject.name=shared,reason=SecretNotFound"),
            timeout=30,
            what="a SecretNotFound Event on the policy",
        )
        assert warning["type"] == "Warning" and warning["involvedObject"]["kind"] == "RateLimitPolicy"
        wait_reason(cluster, "llmprovider", "keyed", namespace, "CredentialsSynced", "SecretNotFound")

        apply(cluster, redis_secret)
        obj = wait_reason(cluster, "ratelimitpolicy", "shared", namespace, "Ready", "SecretKeyNotFound")
        said = everything_said(cluster, namespace, obj)
        assert REDIS_PASSWORD not in said and "redis://" not in said

        # Both mend by themselves once the Secrets are right; kubectl wait sees it.
        redis_secret["stringData"] = {"url": redis_url}
        apply(cluster, redis_secret, key_secret)
        for resource in ("ratelimitpolicy/shared", "llmprovider/keyed"):
            cluster.kubectl("wait", "--for=condition=Ready", resource, "-n", namespace, "--timeout=60s")
        wait_for(
            lambda: events(cluster, namespace, "involvedObject.name=shared,reason=Ready,type=Normal"),
            timeout=30,
            what="a Ready Event on the mended policy",
        )
        policy_obj = get(cluster, "ratelimitpolicy", "shared", namespace)
        assert policy_obj is not None and REDIS_PASSWORD not in everything_said(
            cluster, namespace, policy_obj
        )
        provider_obj = get(cluster, "llmprovider", "keyed", namespace)
        for shown in (policy_obj, provider_obj):
            assert shown is not None
            assert shown["status"]["observedGeneration"] == shown["metadata"]["generation"]
            for cond in shown["status"]["conditions"]:
                assert set(cond) >= CONDITION_FIELDS, (shown["kind"], cond)
                assert cond["observedGeneration"] == shown["metadata"]["generation"], (shown["kind"], cond)
        # The table columns and short names of both kinds show the same.
        policies = cluster.kubectl("get", "rlp", "-n", namespace).stdout.splitlines()
        assert policies[0].split()[:5] == ["NAME", "READY", "BACKEND", "COUNTBY", "AGENTS"], policies
        assert policies[1].split()[:5] == ["shared", "True", "redis", "apiKey", "0"], policies
        providers = cluster.kubectl("get", "llmp", "-n", namespace).stdout.splitlines()
        assert providers[1].split()[:4] == ["keyed", "openai-compatible", "True", "True"], providers
        assert all(REDIS_PASSWORD not in line and PROVIDER_KEY not in line for line in op.lines)


def test_status_conventions_across_a_scale(
    cluster: Any, crds: list[str], namespace: str, fake_upstream: Any
) -> None:
    """A spec change that keeps the agent Ready moves observedGeneration, not lastTransitionTime;
    every condition carries type, status, reason, message, observedGeneration, lastTransitionTime."""
    with running_operator(cluster, namespace):
        apply(cluster, *provider(namespace, fake_upstream.endpoint), callers(namespace), agent(namespace))
        before = wait_ready(cluster, namespace)
        for cond in before["status"]["conditions"]:
            assert set(cond) >= CONDITION_FIELDS, cond
        cluster.kubectl("scale", "sentientagent", "helper", "-n", namespace, "--replicas=2")

        def scaled() -> dict[str, Any] | None:
            obj = get(cluster, "sentientagent", "helper", namespace)
            status = (obj or {}).get("status") or {}
            done = (
                obj is not None
                and status.get("observedGeneration") == obj["metadata"]["generation"]
                and status.get("readyReplicas") == 2
            )
            return obj if done else None

        after = wait_for(scaled, timeout=90, what="the agent scaled to 2 and observed")
        assert after["metadata"]["generation"] > before["metadata"]["generation"]
        was, now = condition(before, "Ready"), condition(after, "Ready")
        assert now["status"] == "True"
        assert now["observedGeneration"] == after["metadata"]["generation"]
        assert now["lastTransitionTime"] == was["lastTransitionTime"]


def test_deletion_never_waits_for_the_operator(
    cluster: Any, crds: list[str], namespace: str, fake_upstream: Any
) -> None:
    """No finalizer on any kind: deleting a provider an agent still uses, then the agent and the
    policy with no operator running at all, completes at once."""
    policy = {
        "apiVersion": "sentient.dev/v1alpha1",
        "kind": "RateLimitPolicy",
        "metadata": {"name": "std", "namespace": namespace},
        "spec": {"limits": {"requestsPerMinute": 60}},
    }
    with running_operator(cluster, namespace, delete_agents=False):
        apply(
            cluster,
            *provider(namespace, fake_upstream.endpoint),
            callers(namespace),
            policy,
            agent(namespace, rateLimitPolicyRef={"name": "std"}),
        )
        wait_ready(cluster, namespace)
        for kind, name in (("sentientagent", "helper"), ("llmprovider", "fake"), ("ratelimitpolicy", "std")):
            obj = get(cluster, kind, name, namespace)
            assert obj is not None and not obj["metadata"].get("finalizers"), (kind, obj)
        cluster.kubectl("delete", "llmprovider", "fake", "-n", namespace, "--timeout=30s")
        wait_reason(cluster, "sentientagent", "helper", namespace, "ProvidersResolved", "ProviderNotFound")
    # The operator is gone now.
    cluster.kubectl("delete", "sentientagent", "helper", "-n", namespace, "--timeout=30s")
    cluster.kubectl("delete", "ratelimitpolicy", "std", "-n", namespace, "--timeout=30s")


@pytest.mark.skipif(bao_binary() is None, reason="bao not installed (python -m e2e.tools ensure)")
def test_malformed_vault_token_keeps_the_last_good_key_and_is_never_shown(
    cluster: Any, crds: list[str], namespace: str
) -> None:
    with OpenBao() as bao:
        token = seed_vault(bao, "sk-vault-good")
        token_secret = secret(namespace, "vault-token", token=token)
        vaulted = vault_provider(namespace, bao.url, refreshInterval="1h")
        with running_operator(cluster, namespace) as op:
            apply(cluster, token_secret, vaulted)
            cluster.kubectl(
                "wait", "--for=condition=Ready", "llmprovider/vaulted", "-n", namespace, "--timeout=60s"
            )

            # Two tokens pasted into one key: Malformed, the bound key stays, nothing quotes the token.
            token_secret["stringData"] = {"token": f"{token}\n{token}"}
            apply(cluster, token_secret)
            obj = wait_reason(cluster, "llmprovider", "vaulted", namespace, "CredentialsSynced", "Malformed")
            assert "vault-token" in condition(obj, "CredentialsSynced")["message"]
            assert condition(obj, "Ready")["status"] == "True"  # the last good key is still bound
            bound = get(cluster, "secret", "sentient-provider-vaulted", namespace)
            assert bound is not None and bound["data"]
            said = everything_said(cluster, namespace, obj)
            assert token not in said and "sk-vault-good" not in said
            assert all(token not in line for line in op.lines)

            # The Secret is mended: synced again by itself (the token Secret is watched).
            token_secret["stringData"] = {"token": token}
            apply(cluster, token_secret)
            wait_reason(cluster, "llmprovider", "vaulted", namespace, "CredentialsSynced", "Synced")


def test_a_child_the_apiserver_refuses_names_the_field(
    cluster: Any, crds: list[str], namespace: str, fake_upstream: Any
) -> None:
    """The free-form Pod-spec pieces (tolerations, affinity, ...) are checked by the apiserver
    only when the Deployment is written: ApplyFailed then says which kind and which field, so
    the user knows what to fix; the operator retries with backoff and stays up."""
    bad = agent(namespace, deployment={"tolerations": [{"key": "gpu", "operator": "Sometimes"}]})
    with running_operator(cluster, namespace) as op:
        apply(cluster, *provider(namespace, fake_upstream.endpoint), callers(namespace), bad)
        obj = blocked_cleanly(cluster, namespace, "Progressing", "ApplyFailed", op)
        message = condition(obj, "Ready")["message"]
        assert "Deployment" in message and "tolerations[0].operator" in message, message
        assert "Sometimes" not in message  # field paths, not values

        bad["spec"]["deployment"]["tolerations"][0]["operator"] = "Exists"
        apply(cluster, bad)
        wait_ready(cluster, namespace)


def test_agent_waits_for_its_providers_secret_then_mends(
    cluster: Any, crds: list[str], namespace: str, fake_upstream: Any
) -> None:
    """The provider's own Secret is missing: the agent says CredentialsNotReady in the provider's
    words; the Secret is created and the agent becomes Ready without anyone touching it."""
    key_secret, llm_provider = provider(namespace, fake_upstream.endpoint)
    with running_operator(cluster, namespace) as op:
        apply(cluster, llm_provider, callers(namespace), agent(namespace))
        obj = blocked_cleanly(cluster, namespace, "CredentialsReady", "CredentialsNotReady", op)
        assert f"Secret {namespace}/fake-key not found" in condition(obj, "CredentialsReady")["message"]
        apply(cluster, key_secret)
        wait_ready(cluster, namespace)


@pytest.mark.skipif(bao_binary() is None, reason="bao not installed (python -m e2e.tools ensure)")
def test_agent_waits_for_an_unreachable_store_then_mends(
    cluster: Any, crds: list[str], namespace: str
) -> None:
    """Vault cannot be reached at the provider's first sync: the provider says StoreUnreachable
    (and binds nothing), the agent waits with a reason; once Vault answers, both mend by
    themselves (the provider retries with backoff, the agent follows its provider)."""
    vault_key = f"sk-vault-{secrets.token_hex(4)}"
    with run_fake("openai", api_key=vault_key) as upstream, OpenBao() as bao, FaultProxy(bao.url) as proxy:
        token = seed_vault(bao, vault_key)
        proxy.mode = "reset"
        vaulted = vault_provider(namespace, proxy.url)
        vaulted["spec"].update(
            {"type": "openai-compatible", "endpoint": upstream.endpoint, "defaultModel": "fake-model"}
        )
        with running_operator(cluster, namespace) as op:
            apply(
                cluster,
                secret(namespace, "vault-token", token=token),
                vaulted,
                callers(namespace),
                agent(namespace, provider_name="vaulted"),
            )
            wait_reason(cluster, "llmprovider", "vaulted", namespace, "CredentialsSynced", "StoreUnreachable")
            assert get(cluster, "secret", "sentient-provider-vaulted", namespace) is None
            obj = blocked_cleanly(cluster, namespace, "CredentialsReady", "CredentialsNotReady", op)
            said = everything_said(cluster, namespace, obj)
            assert token not in said and vault_key not in said

            proxy.mode = "pass"
            cluster.kubectl(
                "wait", "--for=condition=Ready", "llmprovider/vaulted", "-n", namespace, "--timeout=90s"
            )
            wait_ready(cluster, namespace)
            assert all(token not in line and vault_key not in line for line in op.lines)
