"""Reference resolution: every reason an agent cannot be rendered, without a cluster."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sentient_operator.api.v1alpha1 import SentientAgentSpec
from sentient_operator.references import Resolution, namespace_allowed, resolve


class Dicts:
    """A Lookup over plain dicts."""

    def __init__(self) -> None:
        self.providers: dict[tuple[str, str], dict[str, Any]] = {}
        self.policies: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.config_maps: dict[tuple[str, str], dict[str, str]] = {}

    def provider(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.providers.get((namespace, name))

    def policy(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.policies.get((namespace, name))

    def secret(self, namespace: str, name: str) -> Mapping[str, str] | None:
        return self.secrets.get((namespace, name))

    def config_map(self, namespace: str, name: str) -> Mapping[str, str] | None:
        return self.config_maps.get((namespace, name))


def agent_spec(**overrides: Any) -> SentientAgentSpec:
    spec: dict[str, Any] = {
        "systemPrompt": "hi",
        "llm": {"chain": [{"providerRef": {"name": "openai"}}]},
        "auth": {"anonymous": True},
    }
    spec.update(overrides)
    return SentientAgentSpec.model_validate(spec)


def provider(allowed: list[str] | None = None, credentials: bool = True, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "openai", "defaultModel": "gpt-4o-mini", **extra}
    if credentials:
        spec["credentials"] = {"secretRef": {"name": "src", "key": "apiKey"}}
    else:
        spec.update(type="openai-compatible", endpoint="http://127.0.0.1:8000/v1")
    if allowed is not None:
        spec["allowedNamespaces"] = allowed
    return {"spec": spec, "status": {"credentialsFingerprint": "hmac-sha256:f"}}


def run(lookup: Dicts, spec: SentientAgentSpec, namespace: str = "team") -> Resolution:
    return resolve(
        name="a", namespace=namespace, uid="u", spec=spec, lookup=lookup, image="img", audit_key="k"
    )


def reasons(res: Resolution) -> list[str]:
    return [p.reason for p in res.problems]


def test_resolves_provider_and_binds_its_key() -> None:
    lookup = Dicts()
    lookup.providers[("team", "openai")] = provider()
    lookup.secrets[("team", "sentient-provider-openai")] = {"apiKey": "sk-1", "ca.pem": "PEM"}
    res = run(lookup, agent_spec())
    assert res.ok and res.inputs is not None
    (p,) = res.inputs.providers
    assert (p.id, p.model, p.api_key, p.ca_pem) == ("team/openai", "gpt-4o-mini", "sk-1", "PEM")
    assert res.chain == [{"provider": "team/openai", "model": "gpt-4o-mini", "resolved": True, "ready": True}]


def test_missing_provider() -> None:
    res = run(Dicts(), agent_spec())
    assert not res.ok
    assert reasons(res) == ["ProviderNotFound"]
    assert res.problems[0].condition == "ProvidersResolved"
    assert res.chain[0]["reason"] == "ProviderNotFound"


def test_provider_in_other_namespace_must_allow_it() -> None:
    lookup = Dicts()
    lookup.providers[("shared", "openai")] = provider(allowed=["other"])
    lookup.secrets[("shared", "sentient-provider-openai")] = {"apiKey": "sk"}
    spec = agent_spec(llm={"chain": [{"providerRef": {"name": "openai", "namespace": "shared"}}]})
    assert reasons(run(lookup, spec)) == ["ProviderForbidden"]
    lookup.providers[("shared", "openai")] = provider(allowed=["team"])
    assert run(lookup, spec).ok
    lookup.providers[("shared", "openai")] = provider(allowed=["*"])
    assert run(lookup, spec).ok


def test_credentials_not_synced_yet() -> None:
    lookup = Dicts()
    lookup.providers[("team", "openai")] = provider()
    res = run(lookup, agent_spec())
    # The provider has not finished its first sync: a moment of waiting, not a fault.
    assert reasons(res) == ["CredentialsPending"]
    assert res.problems[0].condition == "CredentialsReady"
    assert res.chain[0]["resolved"] is True or res.chain[0]["reason"] == "CredentialsPending"


def test_failed_provider_sync_names_the_secret_the_user_wrote() -> None:
    lookup = Dicts()
    failed = provider()
    failed["status"]["conditions"] = [
        {
            "type": "CredentialsSynced",
            "status": "False",
            "reason": "SecretNotFound",
            "message": "Secret team/nosecret not found",
        }
    ]
    lookup.providers[("team", "openai")] = failed
    res = run(lookup, agent_spec())
    assert reasons(res) == ["CredentialsNotReady"]
    message = res.problems[0].message
    assert "LLMProvider team/openai" in message and "Secret team/nosecret not found" in message
    assert "sentient-provider-" not in message


def test_keyless_provider_needs_no_secret() -> None:
    lookup = Dicts()
    lookup.providers[("team", "openai")] = provider(credentials=False)
    res = run(lookup, agent_spec())
    assert res.ok and res.inputs is not None
    assert res.inputs.providers[0].api_key is None


def test_model_must_be_set_and_served() -> None:
    lookup = Dicts()
    keyless = {"type": "openai-compatible", "endpoint": "http://127.0.0.1:8000/v1"}
    lookup.providers[("team", "openai")] = {"spec": keyless}
    assert reasons(run(lookup, agent_spec())) == ["ModelNotSet"]
    lookup.providers[("team", "openai")] = {"spec": {**keyless, "models": ["a"]}}
    spec = agent_spec(llm={"chain": [{"providerRef": {"name": "openai"}, "model": "b"}]})
    assert reasons(run(lookup, spec)) == ["ModelNotServed"]


def test_policy_not_found_forbidden_and_redis() -> None:
    lookup = Dicts()
    lookup.providers[("team", "openai")] = provider(credentials=False)
    spec = agent_spec(rateLimitPolicyRef={"name": "std", "namespace": "ops"})
    assert reasons(run(lookup, spec)) == ["PolicyNotFound"]
    policy_spec: dict[str, Any] = {
        "limits": {"requestsPerMinute": 10},
        "backend": {"type": "redis", "redis": {"addressSecretRef": {"name": "redis", "key": "url"}}},
    }
    lookup.policies[("ops", "std")] = {"spec": policy_spec}
    assert reasons(run(lookup, spec)) == ["PolicyForbidden"]
    lookup.policies[("ops", "std")] = {"spec": {**policy_spec, "allowedNamespaces": ["team"]}}
    assert reasons(run(lookup, spec)) == ["SecretNotFound"]
    lookup.secrets[("ops", "redis")] = {"url": "redis://r:6379/0"}
    res = run(lookup, spec)
    assert res.ok and res.inputs is not None and res.inputs.policy is not None
    assert res.inputs.policy.redis_url == "redis://r:6379/0"


def test_api_keys_and_tiers() -> None:
    lookup = Dicts()
    lookup.providers[("team", "openai")] = provider(credentials=False)
    spec = agent_spec(auth={"apiKeys": {"secretRef": {"name": "keys"}}})
    assert reasons(run(lookup, spec)) == ["SecretNotFound"]
    lookup.secrets[("team", "keys")] = {"alice": "k1\n", "alice.tier": "gold", "bob": "k2"}
    res = run(lookup, spec)
    assert res.ok and res.inputs is not None
    assert {k: (v.key, v.tier) for k, v in res.inputs.api_keys.items()} == {
        "alice": ("k1", "gold"),
        "bob": ("k2", None),
    }


def test_system_prompt_from_config_map() -> None:
    lookup = Dicts()
    lookup.providers[("team", "openai")] = provider(credentials=False)
    spec = agent_spec(systemPrompt=None, systemPromptFrom={"name": "prompts", "key": "main"})
    assert reasons(run(lookup, spec)) == ["ConfigMapNotFound"]
    lookup.config_maps[("team", "prompts")] = {"other": "x"}
    assert reasons(run(lookup, spec)) == ["ConfigMapKeyNotFound"]
    lookup.config_maps[("team", "prompts")] = {"main": "Be brief."}
    res = run(lookup, spec)
    assert res.ok and res.inputs is not None and res.inputs.system_prompt == "Be brief."


def test_problems_never_quote_secret_values() -> None:
    lookup = Dicts()
    lookup.providers[("team", "openai")] = provider()
    lookup.secrets[("team", "sentient-provider-openai")] = {"wrongKey": "sk-very-secret"}
    res = run(lookup, agent_spec())
    assert reasons(res) == ["CredentialsPending"]
    assert all("sk-very-secret" not in p.message for p in res.problems)


def test_namespace_allowed() -> None:
    assert namespace_allowed([], "a", "a")
    assert not namespace_allowed([], "a", "b")
    assert namespace_allowed(["b"], "a", "b")
    assert namespace_allowed(["*"], "a", "z")


def test_provider_with_a_refused_key_is_a_warning_naming_it_not_a_blocker() -> None:
    lookup = Dicts()
    refused = provider()
    refused["status"]["conditions"] = [
        {
            "type": "CredentialsValid",
            "status": "False",
            "reason": "Unauthorized",
            "message": "the upstream refused the credential: the provider rejected the key (HTTP 401)",
        }
    ]
    lookup.providers[("team", "openai")] = refused
    lookup.secrets[("team", "sentient-provider-openai")] = {"apiKey": "sk-secret-value"}
    res = run(lookup, agent_spec())
    assert res.ok and res.inputs is not None
    [warning] = res.warnings
    assert (warning.condition, warning.reason) == ("CredentialsValid", "Unauthorized")
    assert "LLMProvider team/openai" in warning.message and "HTTP 401" in warning.message
    assert "sk-secret-value" not in warning.message
    assert res.chain[0]["ready"] is False and res.chain[0]["reason"] == "Unauthorized"
    refused["status"]["conditions"][0]["status"] = "True"
    assert run(lookup, agent_spec()).warnings == []


def test_cluster_and_sentinel_redis_secrets_are_resolved() -> None:
    lookup = Dicts()
    lookup.providers[("team", "openai")] = provider(credentials=False)
    policy_spec: dict[str, Any] = {
        "limits": {"requestsPerMinute": 10},
        "backend": {
            "type": "redis",
            "redis": {
                "mode": "sentinel",
                "sentinel": {
                    "addresses": ["sentinel:26379"],
                    "masterName": "m",
                    "passwordSecretRef": {"name": "redis", "key": "sentinel-password"},
                },
                "passwordSecretRef": {"name": "redis", "key": "password"},
                "tls": {"caSecretRef": {"name": "redis-ca", "key": "ca.pem"}},
            },
        },
    }
    lookup.policies[("team", "std")] = {"spec": policy_spec}
    sessions = {
        "store": "redis",
        "redis": {
            "mode": "cluster",
            "cluster": {"nodes": ["redis-0:6379"]},
            "passwordSecretRef": {"name": "sessions-redis", "key": "pw"},
        },
    }
    spec = agent_spec(rateLimitPolicyRef={"name": "std"}, sessions=sessions)
    lookup.secrets[("team", "redis")] = {"password": "p1", "sentinel-password": "s1"}
    res = run(lookup, spec)
    # Every referenced key must exist: the CA Secret and the sessions password are still missing.
    assert reasons(res) == ["SecretNotFound", "SecretNotFound"]
    assert all("p1" not in p.message and "s1" not in p.message for p in res.problems)
    lookup.secrets[("team", "redis-ca")] = {"ca.pem": "PEM"}
    lookup.secrets[("team", "sessions-redis")] = {"pw": "p2"}
    res = run(lookup, spec)
    assert res.ok and res.inputs is not None and res.inputs.policy is not None
    assert res.inputs.policy.redis_url is None
    assert res.inputs.policy.redis_files == {
        "ratelimit-redis-password": "p1",
        "ratelimit-redis-sentinel-password": "s1",
        "ratelimit-redis-ca.pem": "PEM",
    }
    assert res.inputs.sessions_redis_url is None
    assert res.inputs.sessions_redis_files == {"sessions-redis-password": "p2"}


def test_audit_sink_token_and_ca_are_bound_or_reported_missing() -> None:
    lookup = Dicts()
    lookup.providers[("team", "openai")] = provider()
    lookup.secrets[("team", "sentient-provider-openai")] = {"apiKey": "sk-1"}
    sinks = {
        "sinks": [
            {
                "name": "splunk",
                "http": {"url": "https://s:8088", "tokenSecretRef": {"name": "hec", "key": "token"}},
            },
            {
                "name": "rsyslog",
                "syslog": {"address": "r:6514", "tls": {"caSecretRef": {"name": "ca", "key": "ca.crt"}}},
            },
        ]
    }
    res = run(lookup, agent_spec(audit=sinks))
    assert reasons(res) == ["SecretNotFound", "SecretNotFound"]
    assert all("audit sink" in p.message for p in res.problems)
    lookup.secrets[("team", "hec")] = {"token": "hec-secret"}
    lookup.secrets[("team", "ca")] = {"ca.crt": "PEM"}
    res = run(lookup, agent_spec(audit=sinks))
    assert res.ok and res.inputs is not None
    assert res.inputs.audit_sink_files == {
        "audit-sink-splunk-token": "hec-secret",
        "audit-sink-rsyslog-ca.pem": "PEM",
    }


def test_response_cache_redis_secrets_are_resolved_only_when_enabled() -> None:
    lookup = Dicts()
    lookup.providers[("team", "openai")] = provider(credentials=False)
    cache = {"backend": "redis", "redis": {"addressSecretRef": {"name": "cache-redis", "key": "url"}}}
    off = run(lookup, agent_spec(cache=cache))
    # Off: the Secret is not needed (nor bound).
    assert off.ok and off.inputs is not None and off.inputs.cache_redis_files == {}
    spec = agent_spec(cache={**cache, "enabled": True})
    assert reasons(run(lookup, spec)) == ["SecretNotFound"]
    lookup.secrets[("team", "cache-redis")] = {"url": "redis://:pw@cache:6379/0"}
    res = run(lookup, spec)
    assert res.ok and res.inputs is not None
    assert res.inputs.cache_redis_files == {"cache-redis-url": "redis://:pw@cache:6379/0"}


def test_tracing_headers_come_from_the_whole_secret() -> None:
    lookup = Dicts()
    lookup.providers[("team", "openai")] = provider(credentials=False)
    tracing = {"endpoint": "https://otel.example:4318", "headersSecretRef": {"name": "otel-auth"}}
    spec = agent_spec(tracing=tracing)
    res = run(lookup, spec)
    assert reasons(res) == ["SecretNotFound"]
    assert all("Bearer" not in p.message for p in res.problems)
    lookup.secrets[("team", "otel-auth")] = {"x-scope": "team", "authorization": "Bearer t0ken"}
    res = run(lookup, spec)
    assert res.ok and res.inputs is not None
    assert res.inputs.tracing_headers == '{"authorization":"Bearer t0ken","x-scope":"team"}'
    assert "t0ken" not in repr(res.inputs)
    # Tracing without headers binds nothing.
    res = run(lookup, agent_spec(tracing={"endpoint": "http://otel:4318"}))
    assert res.inputs is not None and res.inputs.tracing_headers is None
