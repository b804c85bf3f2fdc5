"""The API test cases shared by the offline and the apiserver tests.

``INVALID`` is the one table of invalid resources: ``tests/test_api_models.py`` checks that the
pydantic models reject each with an error naming the field, ``tests/test_crdgen.py`` that the
generated CRD's CEL rules do, and ``e2e/test_crds.py`` sends the very same objects to a real
apiserver and checks the same text in its answer, so offline validation and the apiserver agree.
``VALID`` and ``EXAMPLE_RESOURCES`` are the resources all of them must accept.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sentient_operator.api import v1alpha1 as api

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))

PROVIDER: dict[str, Any] = {
    "apiVersion": api.API_VERSION,
    "kind": "LLMProvider",
    "metadata": {"name": "p"},
    "spec": {
        "type": "openai-compatible",
        "endpoint": "http://127.0.0.1:8900/v1",
        "credentials": {"secretRef": {"name": "key", "key": "apiKey"}},
    },
}
POLICY: dict[str, Any] = {
    "apiVersion": api.API_VERSION,
    "kind": "RateLimitPolicy",
    "metadata": {"name": "rl"},
    "spec": {"limits": {"requestsPerMinute": 60}},
}
AGENT: dict[str, Any] = {
    "apiVersion": api.API_VERSION,
    "kind": "SentientAgent",
    "metadata": {"name": "a"},
    "spec": {
        "systemPrompt": "You help.",
        "llm": {"chain": [{"providerRef": {"name": "p"}, "model": "m"}]},
        "auth": {"apiKeys": {"secretRef": {"name": "keys"}}},
    },
}
VAULT = {
    "server": "https://vault:8200",
    "path": "llm/openai",
    "auth": {"token": {"secretRef": {"name": "t", "key": "t"}}},
}
AZURE = {"vaultURL": "https://v.vault.azure.net/", "secretName": "k", "auth": {"default": True}}
AWS = {"region": "eu-west-1", "secretId": "llm/key"}
K8S_SECRET = {"name": "key", "key": "apiKey"}
CHAIN_ENTRY = {"providerRef": {"name": "p"}, "model": "m"}
STEP_MEMBER: dict[str, Any] = {"providerRef": {"name": "p"}, "model": "m"}
REDIS_URL_REF = {"name": "redis", "key": "url"}
PG_DSN_REF = {"name": "sessions-db", "key": "dsn"}
PRICE = {"inputPerMillion": "2.50", "outputPerMillion": "10.00"}
OIDC: dict[str, Any] = {
    "issuer": "https://login.example.com/",
    "audiences": ["agent-a"],
    "introspection": {"clientID": "agent-a", "clientSecretRef": {"name": "oidc", "key": "secret"}},
}
ROLE: dict[str, Any] = {"name": "reader", "routes": ["assist"], "apiKeys": ["alice"]}
AUDIT_SYSLOG = {
    "address": "rsyslog.logging.svc:6514",
    "tls": {"caSecretRef": {"name": "siem-ca", "key": "ca.crt"}},
}
AUDIT_HEC = {
    "url": "https://splunk.example:8088",
    "tokenSecretRef": {"name": "hec", "key": "token"},
    "index": "sec",
}
REDIS_SENTINEL_ADDRESS = "redis-sentinel.redis.svc:26379"
REDIS_CLUSTER: dict[str, Any] = {
    "mode": "cluster",
    "cluster": {"nodes": ["redis-0.redis:6379", "redis-1.redis:6379", "10.0.0.7:6379", "[fd00::7]:6379"]},
    "passwordSecretRef": {"name": "redis", "key": "password"},
    "tls": {"caSecretRef": {"name": "redis", "key": "ca.pem"}},
}
REDIS_SENTINEL: dict[str, Any] = {
    "mode": "sentinel",
    "sentinel": {
        "addresses": [REDIS_SENTINEL_ADDRESS],
        "masterName": "mymaster",
        "passwordSecretRef": {"name": "redis", "key": "sentinel-password"},
    },
    "username": "sentient",
    "passwordSecretRef": {"name": "redis", "key": "password"},
}


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """JSON merge patch (RFC 7386): maps merge, None deletes, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass(frozen=True)
class Invalid:
    """An invalid resource and the text both validators must answer with (it names the field)."""

    id: str
    base: dict[str, Any]
    patch: dict[str, Any]
    expect: str

    def obj(self) -> dict[str, Any]:
        """The whole invalid object."""
        name = self.id if self.base is not AGENT else "a-" + self.id
        return merge(
            merge(self.base, self.patch), {"metadata": {"name": name}} if "metadata" not in self.patch else {}
        )


def _p(spec: dict[str, Any]) -> dict[str, Any]:
    return {"spec": spec}


INVALID: list[Invalid] = [
    # ----- LLMProvider
    Invalid(
        "two-credential-sources", PROVIDER, _p({"credentials": {"vault": VAULT}}), api.CREDENTIALS_MESSAGE
    ),
    Invalid(
        "no-credential-source", PROVIDER, _p({"credentials": {"secretRef": None}}), api.CREDENTIALS_MESSAGE
    ),
    Invalid(
        "four-credential-sources",
        PROVIDER,
        _p({"credentials": {"vault": VAULT, "azureKeyVault": AZURE, "awsSecretsManager": AWS}}),
        api.CREDENTIALS_MESSAGE,
    ),
    Invalid(
        "openai-without-credentials",
        PROVIDER,
        _p({"type": "openai", "credentials": None}),
        api.PROVIDER_CREDENTIALS_MESSAGE,
    ),
    Invalid("compatible-without-endpoint", PROVIDER, _p({"endpoint": None}), api.ENDPOINT_MESSAGE),
    Invalid("malformed-endpoint", PROVIDER, _p({"endpoint": "not a url"}), "spec.endpoint"),
    Invalid("ftp-endpoint", PROVIDER, _p({"endpoint": "ftp://models.local/v1"}), "spec.endpoint"),
    Invalid("unknown-provider-type", PROVIDER, _p({"type": "gemini"}), "spec.type"),
    Invalid(
        "vault-two-auth-methods",
        PROVIDER,
        _p(
            {
                "credentials": {
                    "secretRef": None,
                    "vault": merge(VAULT, {"auth": {"kubernetes": {"role": "r"}}}),
                }
            }
        ),
        api.VAULT_AUTH_MESSAGE,
    ),
    Invalid(
        "vault-no-auth-method",
        PROVIDER,
        _p({"credentials": {"secretRef": None, "vault": merge(VAULT, {"auth": {"token": None}})}}),
        api.VAULT_AUTH_MESSAGE,
    ),
    Invalid(
        "vault-kv-version-3",
        PROVIDER,
        _p({"credentials": {"secretRef": None, "vault": merge(VAULT, {"kvVersion": 3})}}),
        "spec.credentials.vault.kvVersion",
    ),
    Invalid(
        "azure-no-auth-method",
        PROVIDER,
        _p({"credentials": {"secretRef": None, "azureKeyVault": merge(AZURE, {"auth": {"default": False}})}}),
        api.AZURE_AUTH_MESSAGE,
    ),
    Invalid(
        "azure-two-auth-methods",
        PROVIDER,
        _p(
            {
                "credentials": {
                    "secretRef": None,
                    "azureKeyVault": merge(AZURE, {"auth": {"workloadIdentity": {"clientId": "c"}}}),
                }
            }
        ),
        api.AZURE_AUTH_MESSAGE,
    ),
    Invalid(
        "azure-plain-http-vault-url",
        PROVIDER,
        _p(
            {
                "credentials": {
                    "secretRef": None,
                    "azureKeyVault": merge(AZURE, {"vaultURL": "http://v.local/"}),
                }
            }
        ),
        "spec.credentials.azureKeyVault.vaultURL",
    ),
    Invalid(
        "aws-bad-region",
        PROVIDER,
        _p({"credentials": {"secretRef": None, "awsSecretsManager": merge(AWS, {"region": "Europe"})}}),
        "spec.credentials.awsSecretsManager.region",
    ),
    Invalid(
        "secret-ref-without-key",
        PROVIDER,
        _p({"credentials": {"secretRef": {"key": None}}}),
        "spec.credentials.secretRef.key",
    ),
    Invalid(
        "secret-ref-bad-name",
        PROVIDER,
        _p({"credentials": {"secretRef": {"name": "My_Secret"}}}),
        "spec.credentials.secretRef.name",
    ),
    Invalid(
        "refresh-interval-in-days",
        PROVIDER,
        _p({"credentials": {"refreshInterval": "1d"}}),
        "spec.credentials.refreshInterval",
    ),
    Invalid(
        "refresh-hot-loop", PROVIDER, _p({"credentials": {"refreshInterval": "500ms"}}), api.REFRESH_MESSAGE
    ),
    Invalid("zero-idle-timeout", PROVIDER, _p({"timeouts": {"idle": "0s"}}), api.TIMEOUTS_POSITIVE_MESSAGE),
    Invalid("retry-zero-attempts", PROVIDER, _p({"retry": {"maxAttempts": 0}}), "spec.retry.maxAttempts"),
    Invalid(
        "retry-backoff-inverted",
        PROVIDER,
        _p({"retry": {"initialBackoff": "10s", "maxBackoff": "1s"}}),
        api.RETRY_MESSAGE,
    ),
    Invalid("retry-on-unknown-class", PROVIDER, _p({"retry": {"retryOn": ["4xx"]}}), "spec.retry.retryOn[0]"),
    Invalid("bad-duration", PROVIDER, _p({"timeouts": {"connect": "5 seconds"}}), "spec.timeouts.connect"),
    Invalid(
        "connect-longer-than-total",
        PROVIDER,
        _p({"timeouts": {"connect": "10m", "total": "1m"}}),
        api.TIMEOUTS_MESSAGE,
    ),
    Invalid(
        "breaker-zero-threshold",
        PROVIDER,
        _p({"circuitBreaker": {"failureThreshold": 0}}),
        "spec.circuitBreaker.failureThreshold",
    ),
    Invalid(
        "negative-provider-limit",
        PROVIDER,
        _p({"limits": {"requestsPerMinute": -1}}),
        "spec.limits.requestsPerMinute",
    ),
    Invalid(
        "default-model-not-served",
        PROVIDER,
        _p({"models": ["a", "b"], "defaultModel": "c"}),
        api.DEFAULT_MODEL_MESSAGE,
    ),
    Invalid(
        "credential-in-default-headers",
        PROVIDER,
        _p({"defaultHeaders": {"Authorization": "Bearer sk-123"}}),
        api.HEADERS_MESSAGE,
    ),
    Invalid(
        "crlf-in-default-header-value",
        PROVIDER,
        _p({"defaultHeaders": {"X-Team": "a\r\nX-Injected: 1"}}),
        api.HEADER_SYNTAX_MESSAGE,
    ),
    Invalid(
        "space-in-default-header-name",
        PROVIDER,
        _p({"defaultHeaders": {"X Team": "a"}}),
        api.HEADER_SYNTAX_MESSAGE,
    ),
    Invalid(
        "duplicate-allowed-namespace",
        PROVIDER,
        _p({"allowedNamespaces": ["team-a", "team-a"]}),
        "spec.allowedNamespaces: duplicate entries",
    ),
    Invalid("provider-name-too-long", PROVIDER, {"metadata": {"name": "p" * 64}}, "metadata.name"),
    Invalid("provider-unknown-field", PROVIDER, _p({"apiKey": "sk-123"}), "spec.apiKey"),
    Invalid("pricing-empty", PROVIDER, _p({"pricing": {"currency": "USD"}}), api.PRICING_EMPTY_MESSAGE),
    Invalid(
        "pricing-model-not-served",
        PROVIDER,
        _p({"models": ["m"], "pricing": {"models": [{"model": "x", **PRICE}]}}),
        api.PRICING_MODELS_MESSAGE,
    ),
    Invalid(
        "price-not-a-decimal",
        PROVIDER,
        _p({"pricing": {"default": {**PRICE, "inputPerMillion": "2,50"}}}),
        "spec.pricing.default.inputPerMillion",
    ),
    Invalid(
        "price-seven-decimals",
        PROVIDER,
        _p({"pricing": {"default": {**PRICE, "outputPerMillion": "0.0000001"}}}),
        "spec.pricing.default.outputPerMillion",
    ),
    Invalid(
        "pricing-currency-lowercase",
        PROVIDER,
        _p({"pricing": {"currency": "usd", "default": PRICE}}),
        "spec.pricing.currency",
    ),
    Invalid(
        "duplicate-priced-model",
        PROVIDER,
        _p({"pricing": {"models": [{"model": "m", **PRICE}, {"model": "m", **PRICE}]}}),
        "spec.pricing.models: duplicate entries",
    ),
    Invalid(
        "endpoint-with-credentials",
        PROVIDER,
        _p({"endpoint": "https://user:sk-123@models.local/v1"}),
        api.ENDPOINT_CREDENTIALS_MESSAGE,
    ),
    Invalid(
        "vault-server-with-credentials",
        PROVIDER,
        _p(
            {
                "credentials": {
                    "secretRef": None,
                    "vault": merge(VAULT, {"server": "https://hvs.x@vault:8200"}),
                }
            }
        ),
        api.VAULT_SERVER_CREDENTIALS_MESSAGE,
    ),
    Invalid(
        "aws-endpoint-with-credentials",
        PROVIDER,
        _p(
            {
                "credentials": {
                    "secretRef": None,
                    "awsSecretsManager": merge(AWS, {"endpoint": "http://AKIA:secret@localhost:4566"}),
                }
            }
        ),
        api.AWS_ENDPOINT_CREDENTIALS_MESSAGE,
    ),
    Invalid(
        "vault-kubernetes-empty-mount-path",
        PROVIDER,
        _p(
            {
                "credentials": {
                    "secretRef": None,
                    "vault": merge(
                        VAULT, {"auth": {"token": None, "kubernetes": {"role": "r", "mountPath": ""}}}
                    ),
                }
            }
        ),
        "spec.credentials.vault.auth.kubernetes.mountPath",
    ),
    Invalid(
        "vault-empty-namespace",
        PROVIDER,
        _p({"credentials": {"secretRef": None, "vault": merge(VAULT, {"namespace": ""})}}),
        "spec.credentials.vault.namespace",
    ),
    Invalid(
        "aws-empty-json-key",
        PROVIDER,
        _p({"credentials": {"secretRef": None, "awsSecretsManager": merge(AWS, {"key": ""})}}),
        "spec.credentials.awsSecretsManager.key",
    ),
    Invalid(
        "azure-empty-version",
        PROVIDER,
        _p({"credentials": {"secretRef": None, "azureKeyVault": merge(AZURE, {"version": ""})}}),
        "spec.credentials.azureKeyVault.version",
    ),
    Invalid(
        "breaker-zero-window",
        PROVIDER,
        _p({"circuitBreaker": {"window": "0s"}}),
        api.BREAKER_POSITIVE_MESSAGE,
    ),
    Invalid(
        "tls-ca-and-skip-verify",
        PROVIDER,
        _p({"tls": {"caSecretRef": {"name": "ca", "key": "ca.pem"}, "insecureSkipVerify": True}}),
        api.TLS_BOTH_MESSAGE,
    ),
    Invalid(
        "google-api-key-in-default-headers",
        PROVIDER,
        _p({"defaultHeaders": {"X-Goog-Api-Key": "AIza-123"}}),
        api.HEADERS_MESSAGE,
    ),
    Invalid("duplicate-model", PROVIDER, _p({"models": ["m", "m"]}), "spec.models: duplicate entries"),
    # ----- RateLimitPolicy
    Invalid("budget-without-window", POLICY, _p({"budgets": [{"name": "b"}]}), api.BUDGET_WINDOW_MESSAGE),
    Invalid(
        "budget-day-above-month",
        POLICY,
        _p({"budgets": [{"name": "b", "perDay": "100.5", "perMonth": "100"}]}),
        api.BUDGET_ORDER_MESSAGE,
    ),
    Invalid(
        "budget-tiers-for-agent",
        POLICY,
        _p({"budgets": [{"name": "b", "per": "agent", "tiers": ["gold"], "perDay": "1"}]}),
        api.BUDGET_TIERS_MESSAGE,
    ),
    Invalid(
        "budget-negative",
        POLICY,
        _p({"budgets": [{"name": "b", "perMonth": "-5"}]}),
        "spec.budgets[0].perMonth",
    ),
    Invalid(
        "budget-unknown-per",
        POLICY,
        _p({"budgets": [{"name": "b", "per": "session", "perDay": "1"}]}),
        "spec.budgets[0].per",
    ),
    Invalid(
        "duplicate-budget-names",
        POLICY,
        _p({"budgets": [{"name": "b", "perDay": "1"}, {"name": "b", "perMonth": "9"}]}),
        "spec.budgets: duplicate entries",
    ),
    Invalid(
        "negative-rate-limit",
        POLICY,
        _p({"limits": {"requestsPerMinute": -5}}),
        "spec.limits.requestsPerMinute",
    ),
    Invalid(
        "burst-without-request-rate",
        POLICY,
        _p({"limits": {"requestsPerMinute": None, "tokensPerMinute": 1000, "burst": 10}}),
        api.BURST_MESSAGE,
    ),
    Invalid(
        "tier-burst-without-request-rate",
        POLICY,
        _p(
            {
                "limits": {"requestsPerMinute": None, "concurrency": 5},
                "tiers": [{"name": "gold", "limits": {"burst": 20}}],
            }
        ),
        api.BURST_MESSAGE,
    ),
    Invalid("zero-concurrency", POLICY, _p({"limits": {"concurrency": 0}}), "spec.limits.concurrency"),
    Invalid("no-limits", POLICY, _p({"limits": {"requestsPerMinute": None}}), api.POLICY_LIMITS_MESSAGE),
    Invalid(
        "redis-backend-without-redis", POLICY, _p({"backend": {"type": "redis"}}), api.BACKEND_REDIS_MESSAGE
    ),
    Invalid(
        "memory-backend-with-redis",
        POLICY,
        _p({"backend": {"type": "memory", "redis": {"addressSecretRef": {"name": "r", "key": "url"}}}}),
        api.BACKEND_MEMORY_MESSAGE,
    ),
    Invalid(
        "redis-standalone-without-url",
        POLICY,
        _p({"backend": {"type": "redis", "redis": {"keyPrefix": "x:"}}}),
        api.POLICY_REDIS_MESSAGES.standalone,
    ),
    Invalid(
        "redis-cluster-without-nodes",
        POLICY,
        _p({"backend": {"type": "redis", "redis": {"mode": "cluster"}}}),
        api.POLICY_REDIS_MESSAGES.cluster,
    ),
    Invalid(
        "redis-cluster-empty-nodes",
        POLICY,
        _p({"backend": {"type": "redis", "redis": {"mode": "cluster", "cluster": {"nodes": []}}}}),
        "spec.backend.redis.cluster.nodes",
    ),
    Invalid(
        "redis-cluster-node-without-port",
        POLICY,
        _p({"backend": {"type": "redis", "redis": {"mode": "cluster", "cluster": {"nodes": ["redis-0"]}}}}),
        "spec.backend.redis.cluster.nodes",
    ),
    Invalid(
        "redis-sentinel-without-sentinel",
        POLICY,
        _p({"backend": {"type": "redis", "redis": {"mode": "sentinel"}}}),
        api.POLICY_REDIS_MESSAGES.sentinel,
    ),
    Invalid(
        "redis-sentinel-without-master-name",
        POLICY,
        _p(
            {
                "backend": {
                    "type": "redis",
                    "redis": {"mode": "sentinel", "sentinel": {"addresses": [REDIS_SENTINEL_ADDRESS]}},
                }
            }
        ),
        "spec.backend.redis.sentinel.masterName",
    ),
    Invalid(
        "redis-cluster-with-url",
        POLICY,
        _p(
            {"backend": {"type": "redis", "redis": merge(REDIS_CLUSTER, {"addressSecretRef": REDIS_URL_REF})}}
        ),
        api.POLICY_REDIS_MESSAGES.address,
    ),
    Invalid(
        "redis-standalone-with-password",
        POLICY,
        _p(
            {
                "backend": {
                    "type": "redis",
                    "redis": {"addressSecretRef": REDIS_URL_REF, "passwordSecretRef": REDIS_URL_REF},
                }
            }
        ),
        api.POLICY_REDIS_MESSAGES.standalone_extra,
    ),
    Invalid(
        "redis-sentinel-with-cluster-nodes",
        POLICY,
        _p(
            {
                "backend": {
                    "type": "redis",
                    "redis": merge(REDIS_SENTINEL, {"cluster": REDIS_CLUSTER["cluster"]}),
                }
            }
        ),
        api.POLICY_REDIS_MESSAGES.mode_fields,
    ),
    Invalid(
        "redis-unknown-mode",
        POLICY,
        _p({"backend": {"type": "redis", "redis": {"mode": "replicated"}}}),
        "spec.backend.redis.mode",
    ),
    Invalid(
        "redis-key-prefix-with-braces",
        POLICY,
        _p(
            {
                "backend": {
                    "type": "redis",
                    "redis": {"addressSecretRef": REDIS_URL_REF, "keyPrefix": "rl:{x}:"},
                }
            }
        ),
        "spec.backend.redis.keyPrefix",
    ),
    Invalid(
        "duplicate-tier-names",
        POLICY,
        _p(
            {
                "tiers": [
                    {"name": "gold", "limits": {"requestsPerMinute": 10}},
                    {"name": "gold", "limits": {"requestsPerMinute": 20}},
                ]
            }
        ),
        "spec.tiers: duplicate entries",
    ),
    Invalid(
        "negative-tier-limit",
        POLICY,
        _p({"tiers": [{"name": "gold", "limits": {"tokensPerMinute": -1}}]}),
        "spec.tiers[0].limits.tokensPerMinute",
    ),
    Invalid(
        "redis-tls-ca-and-skip-verify",
        POLICY,
        _p(
            {
                "backend": {
                    "type": "redis",
                    "redis": merge(REDIS_CLUSTER, {"tls": {"insecureSkipVerify": True}}),
                }
            }
        ),
        api.POLICY_REDIS_MESSAGES.tls_both,
    ),
    Invalid("unknown-count-by", POLICY, _p({"countBy": "ip"}), "spec.countBy"),
    Invalid("unknown-redis-fallback", POLICY, _p({"onRedisUnavailable": "maybe"}), "spec.onRedisUnavailable"),
    # Lax YAML typing: the apiserver refuses a quoted number, so offline validation must too.
    Invalid(
        "rate-limit-as-string",
        POLICY,
        _p({"limits": {"requestsPerMinute": "60"}}),
        "spec.limits.requestsPerMinute",
    ),
    Invalid("policy-unknown-field", POLICY, _p({"limit": {"requestsPerMinute": 1}}), "spec.limit"),
    # ----- SentientAgent
    Invalid(
        "both-system-prompts",
        AGENT,
        _p({"systemPromptFrom": {"name": "cm", "key": "prompt"}}),
        api.SYSTEM_PROMPT_MESSAGE,
    ),
    Invalid("no-system-prompt", AGENT, _p({"systemPrompt": None}), api.SYSTEM_PROMPT_MESSAGE),
    Invalid("empty-chain", AGENT, _p({"llm": {"chain": []}}), "spec.llm.chain"),
    Invalid(
        "chain-too-long",
        AGENT,
        _p({"llm": {"chain": [{"providerRef": {"name": f"p{i}"}} for i in range(11)]}}),
        "spec.llm.chain",
    ),
    Invalid(
        "duplicate-chain-entry",
        AGENT,
        _p({"llm": {"chain": [CHAIN_ENTRY, CHAIN_ENTRY]}}),
        api.CHAIN_UNIQUE_MESSAGE,
    ),
    Invalid(
        "chain-entry-without-provider-name",
        AGENT,
        _p({"llm": {"chain": [{"providerRef": {"namespace": "x"}}]}}),
        "spec.llm.chain[0].providerRef.name",
    ),
    Invalid(
        "provider-ref-name-too-long",
        AGENT,
        _p({"llm": {"chain": [{"providerRef": {"name": "p" * 64}}]}}),
        "spec.llm.chain[0].providerRef.name",
    ),
    Invalid(
        "temperature-too-high",
        AGENT,
        _p({"llm": {"parameters": {"temperature": 3}}}),
        "spec.llm.parameters.temperature",
    ),
    Invalid(
        "temperature-negative",
        AGENT,
        _p({"llm": {"parameters": {"temperature": -0.5}}}),
        "spec.llm.parameters.temperature",
    ),
    Invalid("top-p-above-one", AGENT, _p({"llm": {"parameters": {"topP": 1.5}}}), "spec.llm.parameters.topP"),
    Invalid(
        "zero-max-tokens",
        AGENT,
        _p({"llm": {"parameters": {"maxTokens": 0}}}),
        "spec.llm.parameters.maxTokens",
    ),
    Invalid(
        "server-header-timeout-zero",
        AGENT,
        _p({"server": {"limits": {"headerTimeout": "0s"}}}),
        api.SERVER_LIMITS_POSITIVE_MESSAGE,
    ),
    Invalid(
        "server-header-bytes-too-small",
        AGENT,
        _p({"server": {"limits": {"maxHeaderBytes": 100}}}),
        "spec.server.limits.maxHeaderBytes",
    ),
    Invalid(
        "server-no-connections",
        AGENT,
        _p({"server": {"limits": {"maxConnections": 0}}}),
        "spec.server.limits.maxConnections",
    ),
    Invalid(
        "server-busy-poll-too-long",
        AGENT,
        _p({"server": {"busyPoll": "20ms"}}),
        api.BUSY_POLL_MESSAGE,
    ),
    Invalid(
        "min-replicas-above-max",
        AGENT,
        _p({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}),
        api.AUTOSCALING_MESSAGE,
    ),
    Invalid(
        "cpu-target-above-100",
        AGENT,
        _p({"autoscaling": {"maxReplicas": 2, "targetCPUUtilization": 150}}),
        "spec.autoscaling.targetCPUUtilization",
    ),
    Invalid("negative-replicas", AGENT, _p({"replicas": -1}), "spec.replicas"),
    Invalid("no-caller-auth", AGENT, _p({"auth": None}), api.AUTH_MESSAGE),
    Invalid(
        "oidc-without-audience",
        AGENT,
        _p({"auth": {"oidc": {**OIDC, "audiences": []}}}),
        "spec.auth.oidc.audiences",
    ),
    Invalid(
        "oidc-issuer-not-url",
        AGENT,
        _p({"auth": {"oidc": {**OIDC, "issuer": "login"}}}),
        "spec.auth.oidc.issuer",
    ),
    Invalid(
        "introspection-without-secret",
        AGENT,
        _p({"auth": {"oidc": {**OIDC, "introspection": {"clientID": "agent-a"}}}}),
        "spec.auth.oidc.introspection.clientSecretRef",
    ),
    Invalid(
        "introspection-cache-too-long",
        AGENT,
        _p({"auth": {"oidc": merge(OIDC, {"introspection": {"cacheTTL": "1h"}})}}),
        api.INTROSPECTION_CACHE_MESSAGE,
    ),
    Invalid(
        "introspection-negative-cache-longer",
        AGENT,
        _p({"auth": {"oidc": merge(OIDC, {"introspection": {"cacheTTL": "10s", "negativeCacheTTL": "1m"}})}}),
        api.INTROSPECTION_CACHE_MESSAGE,
    ),
    Invalid(
        "role-granted-to-nobody",
        AGENT,
        _p({"auth": {"authorization": {"roles": [{"name": "reader", "routes": ["assist"]}]}}}),
        api.ROLE_GRANT_MESSAGE,
    ),
    Invalid(
        "role-unknown-route",
        AGENT,
        _p({"auth": {"authorization": {"roles": [{**ROLE, "routes": ["admin"]}]}}}),
        "spec.auth.authorization.roles[0].routes[0]",
    ),
    Invalid(
        "role-api-keys-without-api-keys",
        AGENT,
        _p({"auth": {"apiKeys": None, "oidc": OIDC, "authorization": {"roles": [ROLE]}}}),
        api.ROLE_API_KEYS_MESSAGE,
    ),
    Invalid(
        "role-claims-without-tokens",
        AGENT,
        _p(
            {
                "auth": {
                    "authorization": {
                        "roles": [{"name": "svc", "claims": [{"claim": "scope", "value": "agent.chat"}]}]
                    }
                }
            }
        ),
        api.ROLE_CLAIMS_MESSAGE,
    ),
    Invalid(
        "redis-sessions-without-url", AGENT, _p({"sessions": {"store": "redis"}}), api.SESSIONS_REDIS_MESSAGE
    ),
    Invalid("session-ttl-forever", AGENT, _p({"sessions": {"ttl": "forever"}}), "spec.sessions.ttl"),
    Invalid(
        "cache-redis-without-redis",
        AGENT,
        _p({"cache": {"enabled": True, "backend": "redis"}}),
        api.CACHE_REDIS_MESSAGE,
    ),
    Invalid(
        "cache-memory-with-redis",
        AGENT,
        _p({"cache": {"enabled": True, "redis": {"addressSecretRef": REDIS_URL_REF}}}),
        api.CACHE_MEMORY_MESSAGE,
    ),
    Invalid(
        "cache-entry-above-bound",
        AGENT,
        _p({"cache": {"enabled": True, "maxBytes": 4096, "maxEntryBytes": 8192}}),
        api.CACHE_ENTRY_BYTES_MESSAGE,
    ),
    Invalid(
        "cache-redis-cluster-without-nodes",
        AGENT,
        _p({"cache": {"enabled": True, "backend": "redis", "redis": {"mode": "cluster"}}}),
        api.CACHE_REDIS_MESSAGES.cluster,
    ),
    Invalid("cache-unknown-scope", AGENT, _p({"cache": {"scope": "everyone"}}), "spec.cache.scope"),
    Invalid("cache-ttl-forever", AGENT, _p({"cache": {"ttl": "forever"}}), "spec.cache.ttl"),
    Invalid("cache-no-entries", AGENT, _p({"cache": {"maxEntries": 0}}), "spec.cache.maxEntries"),
    Invalid(
        "redis-sessions-url-and-connection",
        AGENT,
        _p({"sessions": {"store": "redis", "redisSecretRef": REDIS_URL_REF, "redis": REDIS_SENTINEL}}),
        api.SESSIONS_REDIS_BOTH_MESSAGE,
    ),
    Invalid(
        "redis-sessions-cluster-without-nodes",
        AGENT,
        _p({"sessions": {"store": "redis", "redis": {"mode": "cluster"}}}),
        api.SESSIONS_REDIS_MESSAGES.cluster,
    ),
    Invalid(
        "redis-sessions-standalone-with-tls",
        AGENT,
        _p({"sessions": {"store": "redis", "redis": {"addressSecretRef": REDIS_URL_REF, "tls": {}}}}),
        api.SESSIONS_REDIS_MESSAGES.standalone_extra,
    ),
    Invalid(
        "redis-sessions-sentinel-without-addresses",
        AGENT,
        _p({"sessions": {"store": "redis", "redis": {"mode": "sentinel", "sentinel": {"masterName": "m"}}}}),
        "spec.sessions.redis.sentinel.addresses",
    ),
    Invalid(
        "postgres-sessions-without-database",
        AGENT,
        _p({"sessions": {"store": "postgres"}}),
        api.SESSIONS_POSTGRES_MESSAGE,
    ),
    Invalid(
        "postgres-settings-with-memory-store",
        AGENT,
        _p({"sessions": {"store": "memory", "postgres": {"dsnSecretRef": PG_DSN_REF}}}),
        api.SESSIONS_POSTGRES_UNUSED_MESSAGE,
    ),
    Invalid(
        "postgres-sessions-without-dsn",
        AGENT,
        _p({"sessions": {"store": "postgres", "postgres": {"poolSize": 5}}}),
        "spec.sessions.postgres.dsnSecretRef",
    ),
    Invalid(
        "postgres-pool-size-zero",
        AGENT,
        _p({"sessions": {"store": "postgres", "postgres": {"dsnSecretRef": PG_DSN_REF, "poolSize": 0}}}),
        "spec.sessions.postgres.poolSize",
    ),
    Invalid(
        "postgres-table-name-not-an-identifier",
        AGENT,
        _p(
            {
                "sessions": {
                    "store": "postgres",
                    "postgres": {"dsnSecretRef": PG_DSN_REF, "tableName": 'chat"; drop table x; --'},
                }
            }
        ),
        "spec.sessions.postgres.tableName",
    ),
    Invalid("service-port-out-of-range", AGENT, _p({"service": {"port": 70000}}), "spec.service.port"),
    Invalid(
        "service-type-external-name", AGENT, _p({"service": {"type": "ExternalName"}}), "spec.service.type"
    ),
    Invalid(
        "unknown-rotation-strategy",
        AGENT,
        _p({"rotation": {"strategy": "Recreate"}}),
        "spec.rotation.strategy",
    ),
    Invalid(
        "jwt-without-audiences",
        AGENT,
        _p({"auth": {"jwt": {"issuer": "https://i", "audiences": [], "jwksURL": "https://i/jwks"}}}),
        "spec.auth.jwt.audiences",
    ),
    Invalid(
        "jwt-bad-jwks-url",
        AGENT,
        _p({"auth": {"jwt": {"issuer": "https://i", "audiences": ["a"], "jwksURL": "jwks.json"}}}),
        "spec.auth.jwt.jwksURL",
    ),
    Invalid(
        "bad-agent-class",
        AGENT,
        _p({"deployment": {"agentClass": "not a class"}}),
        "spec.deployment.agentClass",
    ),
    Invalid(
        "duplicate-capability",
        AGENT,
        _p({"capabilities": ["chat", "chat"]}),
        "spec.capabilities: duplicate entries",
    ),
    Invalid(
        "guardrail-check-two-kinds",
        AGENT,
        _p({"guardrails": {"input": [{"pii": {}, "injection": {}}]}}),
        api.GUARDRAIL_ONE_KIND_MESSAGE,
    ),
    Invalid(
        "guardrail-check-no-kind",
        AGENT,
        _p({"guardrails": {"input": [{"action": "flag"}]}}),
        api.GUARDRAIL_ONE_KIND_MESSAGE,
    ),
    Invalid(
        "guardrail-redact-injection",
        AGENT,
        _p({"guardrails": {"input": [{"injection": {}, "action": "redact"}]}}),
        api.GUARDRAIL_REDACT_MESSAGE,
    ),
    Invalid(
        "guardrail-duplicate-names",
        AGENT,
        _p({"guardrails": {"output": [{"name": "x", "pii": {}}, {"name": "x", "size": {"maxChars": 10}}]}}),
        api.GUARDRAIL_NAMES_MESSAGE,
    ),
    Invalid(
        "guardrail-moderation-without-service",
        AGENT,
        _p({"guardrails": {"input": [{"moderation": {}}]}}),
        api.GUARDRAIL_MODERATION_MESSAGE,
    ),
    Invalid(
        "guardrail-moderation-provider-not-in-chain",
        AGENT,
        _p({"guardrails": {"moderation": {"providerRef": {"name": "other"}}}}),
        api.GUARDRAIL_MODERATION_CHAIN_MESSAGE,
    ),
    Invalid(
        "tracing-endpoint-with-credentials",
        AGENT,
        _p({"tracing": {"endpoint": "https://user:token@collector.example:4318"}}),
        api.TRACING_ENDPOINT_CREDENTIALS_MESSAGE,
    ),
    Invalid(
        "tracing-timeout-too-long",
        AGENT,
        _p({"tracing": {"endpoint": "http://collector:4318", "timeout": "5m"}}),
        api.TRACING_TIMEOUT_MESSAGE,
    ),
    Invalid(
        "tracing-without-endpoint",
        AGENT,
        _p({"tracing": {"samplingRatio": 0.5}}),
        "spec.tracing.endpoint",
    ),
    Invalid(
        "tracing-endpoint-not-a-url",
        AGENT,
        _p({"tracing": {"endpoint": "collector:4318"}}),
        "spec.tracing.endpoint",
    ),
    Invalid(
        "tracing-sampling-above-one",
        AGENT,
        _p({"tracing": {"endpoint": "http://collector:4318", "samplingRatio": 1.5}}),
        "spec.tracing.samplingRatio",
    ),
    Invalid(
        "tracing-grpc-protocol",
        AGENT,
        _p({"tracing": {"endpoint": "http://collector:4317", "protocol": "grpc"}}),
        "spec.tracing.protocol",
    ),
    Invalid(
        "guardrail-unknown-action",
        AGENT,
        _p({"guardrails": {"input": [{"injection": {}, "action": "drop"}]}}),
        "spec.guardrails.input[0].action",
    ),
    Invalid(
        "guardrail-threshold-above-one",
        AGENT,
        _p({"guardrails": {"input": [{"injection": {"threshold": 1.5}}]}}),
        "spec.guardrails.input[0].injection.threshold",
    ),
    Invalid(
        "guardrail-unknown-entity",
        AGENT,
        _p({"guardrails": {"output": [{"pii": {"entities": ["ssn"]}}]}}),
        "spec.guardrails.output[0].pii.entities[0]",
    ),
    Invalid(
        "guardrail-empty-deny",
        AGENT,
        _p({"guardrails": {"input": [{"patterns": {"deny": []}}]}}),
        "spec.guardrails.input[0].patterns.deny",
    ),
    Invalid(
        "guardrail-window-too-small",
        AGENT,
        _p({"guardrails": {"streamWindow": 4}}),
        "spec.guardrails.streamWindow",
    ),
    Invalid(
        "step-provider-and-members",
        AGENT,
        _p({"llm": {"chain": [{"providerRef": {"name": "p"}, "members": [STEP_MEMBER]}]}}),
        api.STEP_ONE_OF_MESSAGE,
    ),
    Invalid(
        "step-neither-provider-nor-members", AGENT, _p({"llm": {"chain": [{}]}}), api.STEP_ONE_OF_MESSAGE
    ),
    Invalid(
        "step-empty-members", AGENT, _p({"llm": {"chain": [{"members": []}]}}), "spec.llm.chain[0].members"
    ),
    Invalid(
        "step-too-many-members",
        AGENT,
        _p({"llm": {"chain": [{"members": [{"providerRef": {"name": f"p{i}"}} for i in range(17)]}]}}),
        "spec.llm.chain[0].members",
    ),
    Invalid(
        "step-zero-weight",
        AGENT,
        _p({"llm": {"chain": [{"members": [{**STEP_MEMBER, "weight": 0}]}]}}),
        "spec.llm.chain[0].members[0].weight",
    ),
    Invalid(
        "step-unknown-strategy",
        AGENT,
        _p({"llm": {"chain": [{"members": [STEP_MEMBER], "strategy": "random"}]}}),
        "spec.llm.chain[0].strategy",
    ),
    Invalid(
        "step-duplicate-members",
        AGENT,
        _p({"llm": {"chain": [{"members": [STEP_MEMBER, {**STEP_MEMBER, "weight": 5}]}]}}),
        api.STEP_MEMBERS_UNIQUE_MESSAGE,
    ),
    Invalid(
        "step-model-beside-members",
        AGENT,
        _p({"llm": {"chain": [{"members": [STEP_MEMBER], "model": "m"}]}}),
        api.STEP_MODEL_MESSAGE,
    ),
    Invalid(
        "strategy-without-members",
        AGENT,
        _p({"llm": {"chain": [{**CHAIN_ENTRY, "strategy": "weight"}]}}),
        api.STEP_STRATEGY_MESSAGE,
    ),
    Invalid(
        "lowest-latency-settings-other-strategy",
        AGENT,
        _p({"llm": {"chain": [{"members": [STEP_MEMBER], "lowestLatency": {"halfLife": "5s"}}]}}),
        api.STEP_LATENCY_MESSAGE,
    ),
    Invalid(
        "lowest-latency-zero-probe",
        AGENT,
        _p(
            {
                "llm": {
                    "chain": [
                        {
                            "members": [STEP_MEMBER],
                            "strategy": "lowestLatency",
                            "lowestLatency": {"probeInterval": "0s"},
                        }
                    ]
                }
            }
        ),
        api.LATENCY_POSITIVE_MESSAGE,
    ),
    Invalid(
        "audit-sink-two-kinds",
        AGENT,
        _p({"audit": {"sinks": [{"name": "s", "syslog": AUDIT_SYSLOG, "http": AUDIT_HEC}]}}),
        api.AUDIT_SINK_ONE_KIND_MESSAGE,
    ),
    Invalid(
        "audit-sink-no-kind",
        AGENT,
        _p({"audit": {"sinks": [{"name": "s"}]}}),
        api.AUDIT_SINK_ONE_KIND_MESSAGE,
    ),
    Invalid(
        "audit-http-tls-without-https",
        AGENT,
        _p({"audit": {"sinks": [{"name": "s", "http": {"url": "http://splunk:8088", "tls": {}}}]}}),
        api.AUDIT_HTTP_TLS_MESSAGE,
    ),
    Invalid(
        "audit-hec-fields-on-json-lines",
        AGENT,
        _p(
            {
                "audit": {
                    "sinks": [
                        {"name": "s", "http": {"url": "https://v:8080", "format": "jsonLines", "index": "x"}}
                    ]
                }
            }
        ),
        api.AUDIT_HEC_FIELDS_MESSAGE,
    ),
    Invalid(
        "audit-duplicate-sink-names",
        AGENT,
        _p({"audit": {"sinks": [{"name": "s", "syslog": AUDIT_SYSLOG}, {"name": "s", "http": AUDIT_HEC}]}}),
        "spec.audit.sinks: duplicate entries",
    ),
    Invalid(
        "audit-syslog-bad-address",
        AGENT,
        _p({"audit": {"sinks": [{"name": "s", "syslog": {"address": "rsyslog"}}]}}),
        "spec.audit.sinks[0].syslog.address",
    ),
    Invalid(
        "audit-unknown-facility",
        AGENT,
        _p({"audit": {"sinks": [{"name": "s", "syslog": {**AUDIT_SYSLOG, "facility": "security"}}]}}),
        "spec.audit.sinks[0].syslog.facility",
    ),
    Invalid(
        "audit-buffer-zero",
        AGENT,
        _p({"audit": {"sinks": [{"name": "s", "syslog": AUDIT_SYSLOG, "maxBufferMiB": 0}]}}),
        "spec.audit.sinks[0].maxBufferMiB",
    ),
    Invalid(
        "jwks-url-with-credentials",
        AGENT,
        _p({"auth": {"jwt": {"issuer": "i", "audiences": ["a"], "jwksURL": "https://u:p@i.example/jwks"}}}),
        api.JWT_JWKS_CREDENTIALS_MESSAGE,
    ),
    Invalid(
        "oidc-issuer-with-credentials",
        AGENT,
        _p({"auth": {"oidc": {**OIDC, "issuer": "https://u:p@login.example.com/"}}}),
        api.OIDC_ISSUER_CREDENTIALS_MESSAGE,
    ),
    Invalid(
        "oidc-jwks-url-with-credentials",
        AGENT,
        _p({"auth": {"oidc": {**OIDC, "jwksURL": "https://u:p@login.example.com/keys"}}}),
        api.OIDC_JWKS_CREDENTIALS_MESSAGE,
    ),
    Invalid(
        "introspection-endpoint-with-credentials",
        AGENT,
        _p(
            {
                "auth": {
                    "oidc": merge(
                        OIDC, {"introspection": {"endpoint": "https://agent-a:s3cret@idp/introspect"}}
                    )
                }
            }
        ),
        api.INTROSPECTION_ENDPOINT_CREDENTIALS_MESSAGE,
    ),
    Invalid(
        "audit-url-with-credentials",
        AGENT,
        _p(
            {
                "audit": {
                    "sinks": [{"name": "s", "http": {**AUDIT_HEC, "url": "https://x:hec-token@splunk:8088"}}]
                }
            }
        ),
        api.AUDIT_URL_CREDENTIALS_MESSAGE,
    ),
    Invalid(
        "memory-sessions-with-redis-url",
        AGENT,
        _p({"sessions": {"store": "memory", "redisSecretRef": REDIS_URL_REF}}),
        api.SESSIONS_REDIS_UNUSED_MESSAGE,
    ),
    Invalid(
        "introspection-timeout-zero",
        AGENT,
        _p({"auth": {"oidc": merge(OIDC, {"introspection": {"timeout": "0s"}})}}),
        api.INTROSPECTION_TIMEOUT_MESSAGE,
    ),
    Invalid(
        "moderation-timeout-zero",
        AGENT,
        _p({"guardrails": {"moderation": {"providerRef": {"name": "p"}, "timeout": "0s"}}}),
        api.MODERATION_TIMEOUT_MESSAGE,
    ),
    Invalid(
        "audit-syslog-timeout-zero",
        AGENT,
        _p({"audit": {"sinks": [{"name": "s", "syslog": {**AUDIT_SYSLOG, "timeout": "0s"}}]}}),
        api.AUDIT_SYSLOG_TIMEOUT_MESSAGE,
    ),
    Invalid(
        "audit-http-timeout-zero",
        AGENT,
        _p({"audit": {"sinks": [{"name": "s", "http": {**AUDIT_HEC, "timeout": "0ms"}}]}}),
        api.AUDIT_HTTP_TIMEOUT_MESSAGE,
    ),
    Invalid("session-ttl-zero", AGENT, _p({"sessions": {"ttl": "0s"}}), api.SESSIONS_TTL_MESSAGE),
    Invalid(
        "resources-not-a-quantity",
        AGENT,
        _p({"deployment": {"resources": {"limits": {"cpu": "lots"}}}}),
        "spec.deployment.resources.limits.cpu",
    ),
    Invalid(
        "resources-negative-quantity",
        AGENT,
        _p({"deployment": {"resources": {"requests": {"memory": "-1Gi"}}}}),
        "spec.deployment.resources.requests.memory",
    ),
    Invalid(
        "resources-request-above-limit",
        AGENT,
        _p(
            {
                "deployment": {
                    "resources": {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"cpu": "1500m"}}
                }
            }
        ),
        api.RESOURCES_ORDER_MESSAGE,
    ),
    Invalid(
        "resources-unknown-field",
        AGENT,
        _p({"deployment": {"resources": {"limit": {"cpu": "1"}}}}),
        "spec.deployment.resources.limit",
    ),
    Invalid(
        "env-without-name",
        AGENT,
        _p({"deployment": {"env": [{"value": "x"}]}}),
        # Server-side apply says ".spec.deployment.env: element 0: ... omits all key fields ["name"]".
        "spec.deployment.env",
    ),
    Invalid(
        "env-duplicate-name",
        AGENT,
        _p({"deployment": {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}}),
        "spec.deployment.env: duplicate entries",
    ),
    Invalid(
        "image-pull-secret-bad-name",
        AGENT,
        _p({"deployment": {"imagePullSecrets": [{"name": "Registry_Creds"}]}}),
        "spec.deployment.imagePullSecrets[0].name",
    ),
    Invalid(
        "boolean-as-string",
        AGENT,
        _p({"rotation": {"validateBeforeRollout": "yes"}}),
        "spec.rotation.validateBeforeRollout",
    ),
    Invalid("replicas-as-string", AGENT, _p({"replicas": "3"}), "spec.replicas"),
    Invalid(
        "pod-label-value-with-space",
        AGENT,
        _p({"deployment": {"podLabels": {"team": "red team"}}}),
        "spec.deployment.podLabels.team",
    ),
    Invalid(
        "pod-label-key-with-space",
        AGENT,
        _p({"deployment": {"podLabels": {"cost center": "a"}}}),
        api.POD_LABELS_MESSAGE,
    ),
    Invalid(
        "pod-annotation-bad-key",
        AGENT,
        _p({"deployment": {"podAnnotations": {"/no-name": "x"}}}),
        api.POD_ANNOTATIONS_MESSAGE,
    ),
    Invalid(
        "node-selector-bad-key",
        AGENT,
        _p({"deployment": {"nodeSelector": {"gpu!": "true"}}}),
        api.NODE_SELECTOR_MESSAGE,
    ),
    Invalid(
        "node-selector-value-too-long",
        AGENT,
        _p({"deployment": {"nodeSelector": {"zone": "z" * 64}}}),
        "spec.deployment.nodeSelector.zone",
    ),
    Invalid(
        "service-monitor-bad-label-key",
        AGENT,
        _p({"monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release:": "prom"}}}}),
        api.SERVICE_MONITOR_LABELS_MESSAGE,
    ),
    Invalid("empty-image", AGENT, _p({"deployment": {"image": ""}}), "spec.deployment.image"),
    Invalid("agent-name-starts-with-digit", AGENT, {"metadata": {"name": "1agent"}}, "metadata.name"),
    Invalid("agent-unknown-field", AGENT, _p({"model": "gpt-4o"}), "spec.model"),
]

VALID: list[tuple[str, dict[str, Any]]] = [
    ("provider", PROVIDER),
    ("policy", POLICY),
    ("policy-redis-cluster", merge(POLICY, _p({"backend": {"type": "redis", "redis": REDIS_CLUSTER}}))),
    ("policy-redis-sentinel", merge(POLICY, _p({"backend": {"type": "redis", "redis": REDIS_SENTINEL}}))),
    ("agent-sessions-sentinel", merge(AGENT, _p({"sessions": {"store": "redis", "redis": REDIS_SENTINEL}}))),
    (
        "agent-sessions-postgres",
        merge(
            AGENT,
            _p(
                {
                    "sessions": {
                        "store": "postgres",
                        "postgres": {"dsnSecretRef": PG_DSN_REF, "poolSize": 20, "schemaName": "agents"},
                    }
                }
            ),
        ),
    ),
    ("agent", AGENT),
    (
        "agent-audit-sinks",
        merge(
            AGENT,
            _p(
                {
                    "audit": {
                        "sinks": [
                            {"name": "rsyslog", "syslog": AUDIT_SYSLOG},
                            {"name": "splunk", "http": AUDIT_HEC},
                        ],
                        "spool": {"persistentVolumeClaim": "audit-spool", "fsyncInterval": "0s"},
                    }
                }
            ),
        ),
    ),
    ("keyless-compatible", merge(PROVIDER, _p({"credentials": None}))),
    ("vault", merge(PROVIDER, _p({"credentials": {"secretRef": None, "vault": VAULT}}))),
    (
        "aws-ambient",
        merge(
            PROVIDER,
            _p(
                {
                    "type": "anthropic",
                    "endpoint": None,
                    "credentials": {"secretRef": None, "awsSecretsManager": AWS},
                }
            ),
        ),
    ),
    (
        "azure-default",
        merge(PROVIDER, _p({"type": "openai", "credentials": {"secretRef": None, "azureKeyVault": AZURE}})),
    ),
    ("anonymous-agent", merge(AGENT, _p({"auth": {"apiKeys": None, "anonymous": True}}))),
    (
        "oidc-agent-with-roles",
        merge(
            AGENT,
            _p(
                {
                    "auth": {
                        "oidc": OIDC,
                        "authorization": {
                            "roles": [
                                ROLE,
                                {
                                    "name": "service",
                                    "routes": ["chat", "ws"],
                                    "models": ["gpt-4o-mini"],
                                    "tier": "gold",
                                    "claims": [{"claim": "scope", "value": "agent.chat"}],
                                },
                            ]
                        },
                    }
                }
            ),
        ),
    ),
    (
        "same-provider-two-models",
        merge(AGENT, _p({"llm": {"chain": [CHAIN_ENTRY, merge(CHAIN_ENTRY, {"model": "m2"})]}})),
    ),
    (
        "same-provider-other-namespace",
        merge(
            AGENT,
            _p({"llm": {"chain": [CHAIN_ENTRY, merge(CHAIN_ENTRY, {"providerRef": {"namespace": "x"}})]}}),
        ),
    ),
    (
        "prompt-from-configmap",
        merge(AGENT, _p({"systemPrompt": None, "systemPromptFrom": {"name": "cm", "key": "p"}})),
    ),
    (
        "guardrails",
        merge(
            AGENT,
            _p(
                {
                    "guardrails": {
                        "input": [
                            {"size": {"maxChars": 20000}},
                            {"name": "deny", "patterns": {"deny": ["(?i)rm\\s+-rf"], "allow": ["^#"]}},
                            {"injection": {"threshold": 0.6}},
                            {"moderation": {"categories": ["violence"]}, "action": "flag"},
                        ],
                        "output": [{"pii": {"allow": ["support@example\\.com"]}, "action": "redact"}],
                        "moderation": {
                            "providerRef": {"name": "p"},
                            "timeout": "1s",
                            "onError": "failClosed",
                        },
                        "redact": {"logs": True, "audit": True},
                    }
                }
            ),
        ),
    ),
    (
        "balanced-step-then-plain-step",
        merge(
            AGENT,
            _p(
                {
                    "llm": {
                        "chain": [
                            {
                                "members": [
                                    {"providerRef": {"name": "p"}, "model": "m", "weight": 3},
                                    {"providerRef": {"name": "p2"}, "model": "m"},
                                    {"providerRef": {"name": "p"}, "model": "m2"},
                                ],
                                "strategy": "lowestLatency",
                                "lowestLatency": {"halfLife": "5s", "probeInterval": "2s"},
                            },
                            CHAIN_ENTRY,
                        ]
                    },
                    "guardrails": {"moderation": {"providerRef": {"name": "p2"}}},
                }
            ),
        ),
    ),
    (
        "resources-and-env",
        merge(
            AGENT,
            _p(
                {
                    "deployment": {
                        "resources": {
                            "requests": {"cpu": "250m", "memory": "128Mi"},
                            "limits": {"cpu": 1, "memory": "1Gi"},
                        },
                        "podLabels": {"team": "red", "example.com/cost-center": "a_1.b"},
                        "podAnnotations": {"example.com/note": "any text, spaces too"},
                        "nodeSelector": {"kubernetes.io/arch": "arm64"},
                        "env": [
                            {"name": "A", "value": "1"},
                            {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                        ],
                    }
                }
            ),
        ),
    ),
    ("autoscaling-equal-bounds", merge(AGENT, _p({"autoscaling": {"minReplicas": 3, "maxReplicas": 3}}))),
    (
        "tier-burst-on-the-default-request-rate",
        merge(POLICY, _p({"tiers": [{"name": "gold", "limits": {"burst": 20}}]})),
    ),
    (
        "tokens-only-policy",
        merge(POLICY, _p({"limits": {"requestsPerMinute": None, "tokensPerMinute": 1000}})),
    ),
]


def errors_text(exc: ValidationError) -> str:
    """Every error as 'path: message', the path spelled as on the wire (spec.llm.chain[0].model)."""
    lines = []
    for err in exc.errors():
        path = ""
        for part in err["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        lines.append(f"{path}: {err['msg']}")
    return "\n".join(lines)


def _example_resources() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in EXAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("apiVersion") == api.API_VERSION:
                out.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return out


EXAMPLE_RESOURCES = _example_resources()
