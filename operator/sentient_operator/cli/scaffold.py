"""Pure builders of the files ``sentient init`` writes (no I/O, easy to test)."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from sentient_operator.api.v1alpha1 import AMOUNT_PATTERN, API_VERSION
from sentient_operator.cli import templates

ProviderKind = Literal["openai", "anthropic", "openai-compatible"]
SourceKind = Literal["secret", "vault", "aws", "azure", "none"]
SessionsKind = Literal["memory", "redis", "postgres"]

DEFAULT_ENDPOINTS: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "openai-compatible": "http://vllm.models.svc:8000/v1",
}
DEFAULT_MODELS: dict[str, str] = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-3-5-haiku-latest",
    "openai-compatible": "llama-3.1-8b-instruct",
}
# The release this CLI belongs to: the runtime image and the schemas of the same release.
RELEASE = "0.1.0"
RUNTIME_IMAGE = f"ghcr.io/sentient-operator/agent-runtime:{RELEASE}"
# Where editors (yaml-language-server) fetch the schema of agent.yaml from: the release's tag, so a
# file keeps the schema of the CRDs it was written for (a branch would drift; a path relative to a
# checkout does not exist next to a generated project). docs/editors.md says how to use a local copy.
SCHEMA_URL = (
    f"https://raw.githubusercontent.com/sentient-operator/sentient-operator/v{RELEASE}/schemas/sentient.json"
)
SCHEMA_LINE = f"# yaml-language-server: $schema={SCHEMA_URL}\n"
# Where `kubectl create secret` reads the provider key from, per provider type.
KEY_ENV: dict[str, str] = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "openai-compatible": "LLM_API_KEY",
}
CALLER_KEY_ID = "team-a"


def new_caller_key() -> str:
    """A fresh random caller API key (192 bits)."""
    return "sk-agent-" + secrets.token_urlsafe(24)


def provider_name(name: str, provider_type: ProviderKind) -> str:
    """The LLMProvider ``init`` writes for agent ``name``."""
    return f"{name}-{provider_type.replace('-compatible', '')}"


def provider_names(name: str, provider_type: ProviderKind, keys: int = 1) -> list[str]:
    """The LLMProviders ``init`` writes: one, or one per API key when spreading over ``keys`` keys."""
    provider = provider_name(name, provider_type)
    return [provider] if keys <= 1 else [f"{provider}-{i}" for i in range(1, keys + 1)]


def provider_key_steps(
    name: str, provider_type: ProviderKind, source: SourceKind, keys: int = 1
) -> list[str]:
    """What the user must do so that the provider has its key (``init`` prints it).

    The key is never written into agent.yaml: a file with a real key ends up in a repository, and
    one with a placeholder would be applied unchanged.
    """
    if keys > 1:
        # One LLMProvider per key: the steps of each, with its own environment variable.
        return [
            step.replace(f"${KEY_ENV[provider_type]}", f"${KEY_ENV[provider_type]}_{i}")
            for i, provider in enumerate(provider_names(name, provider_type, keys), start=1)
            for step in _key_steps(provider, provider_type, source)
        ]
    return _key_steps(provider_name(name, provider_type), provider_type, source)


def _key_steps(provider: str, provider_type: ProviderKind, source: SourceKind) -> list[str]:
    if source == "secret":
        return [
            f"kubectl create secret generic {provider}-api-key "
            f'--from-literal=apiKey="${KEY_ENV[provider_type]}"   # the provider\'s API key'
        ]
    where = {
        "vault": f"Vault/OpenBao at llm/{provider} (key apiKey)",
        "aws": f"AWS Secrets Manager secret llm/{provider} (key apiKey)",
        "azure": f"Azure Key Vault secret {provider}-api-key",
    }
    if source in where:
        return [
            f"store the provider's API key in {where[source]}, and check the store's address and auth in agent.yaml"
        ]
    return []


def _credentials(source: SourceKind, provider: str) -> dict[str, Any] | None:
    if source == "secret":
        return {"secretRef": {"name": f"{provider}-api-key", "key": "apiKey"}}
    if source == "vault":
        return {
            "vault": {
                "server": "https://vault.vault.svc:8200",
                "path": f"llm/{provider}",
                "kvVersion": 2,
                "key": "apiKey",
                "auth": {"kubernetes": {"role": "sentient-operator"}},
            },
            "refreshInterval": "1m",
        }
    if source == "aws":
        return {
            "awsSecretsManager": {"region": "eu-west-1", "secretId": f"llm/{provider}", "key": "apiKey"},
            "refreshInterval": "5m",
        }
    if source == "azure":
        return {
            "azureKeyVault": {
                "vaultURL": "https://my-vault.vault.azure.net/",
                "secretName": f"{provider}-api-key",
                "auth": {"workloadIdentity": {}},
            },
            "refreshInterval": "5m",
        }
    return None


@dataclass(frozen=True)
class StarterBudget:
    """A starter spend budget: the default model's prices and a daily cap for the whole agent."""

    per_day: str
    input_per_million: str
    output_per_million: str
    currency: str = "USD"

    @classmethod
    def parse(cls, per_day: str, price: str, currency: str = "USD") -> StarterBudget:
        """From ``--budget 50`` and ``--price 2.50:10.00`` (input:output per million tokens)."""
        amount = re.compile(AMOUNT_PATTERN)
        input_price, sep, output_price = price.partition(":")
        if not sep or not amount.match(input_price) or not amount.match(output_price):
            raise ValueError(f"--price {price!r}: use INPUT:OUTPUT per million tokens, e.g. 2.50:10.00")
        if not amount.match(per_day):
            raise ValueError(f"--budget {per_day!r}: use an amount per day, e.g. 50 or 12.50")
        return cls(per_day, input_price, output_price, currency)


def agent_manifests(
    name: str,
    provider_type: ProviderKind = "openai",
    source: SourceKind = "secret",
    model: str | None = None,
    endpoint: str | None = None,
    image: str | None = None,
    agent_class: str | None = None,
    caller_key: str | None = None,
    guardrails: bool = False,
    audit_sink: AuditSinkKind | None = None,
    keys: int = 1,
    balance: str = "weight",
    sessions: SessionsKind = "memory",
    cache: bool = False,
    budget: StarterBudget | None = None,
    oidc_issuer: str | None = None,
    tracing: str | None = None,
) -> list[dict[str, Any]]:
    """The documents of a starter ``agent.yaml``: provider, policy, caller keys, agent.

    The callers' Secret holds ``caller_key`` (default: a fresh random key); ``guardrails`` adds
    the starter checks of :func:`starter_guardrails`. With ``keys`` > 1 there is one LLMProvider
    per API key and the chain is one step spreading over them by ``balance``
    (docs/load-balancing.md). ``sessions`` other than memory keeps the conversations in Redis or
    PostgreSQL, from a Secret :func:`sessions_steps` tells how to make. ``cache`` adds the response
    cache of :func:`starter_cache`. ``budget`` prices the default model and caps the agent's spend
    per day (docs/budgets.md). ``oidc_issuer`` adds OAuth2 / OIDC access tokens of that issuer and
    the starter roles of :func:`starter_authorization`. ``tracing`` (a collector's OTLP/HTTP URL)
    adds the traces of :func:`starter_tracing`.
    """
    names = provider_names(name, provider_type, keys)
    # No Secret with the provider key: see provider_key_steps().
    docs: list[dict[str, Any]] = [
        _provider_document(p, provider_type, source, model, endpoint) for p in names
    ]
    policy_spec: dict[str, Any] = {
        "limits": {"requestsPerMinute": 60, "tokensPerMinute": 100000, "concurrency": 10},
        "countBy": "apiKey",
    }
    if budget is not None:
        for doc in docs:
            doc["spec"]["pricing"] = {
                "currency": budget.currency,
                "models": [
                    {
                        "model": doc["spec"]["defaultModel"],
                        "inputPerMillion": budget.input_per_million,
                        "outputPerMillion": budget.output_per_million,
                    }
                ],
            }
        policy_spec["budgets"] = [
            {"name": "daily", "per": "agent", "currency": budget.currency, "perDay": budget.per_day}
        ]
    docs.append(
        {
            "apiVersion": API_VERSION,
            "kind": "RateLimitPolicy",
            "metadata": {"name": f"{name}-limits"},
            "spec": policy_spec,
        }
    )
    docs.append(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-callers"},
            "type": "Opaque",
            # A fresh random key, never a placeholder: a placeholder applied unchanged would be a
            # key anyone who read the template could use.
            "stringData": {
                CALLER_KEY_ID: caller_key or new_caller_key(),
                f"{CALLER_KEY_ID}.tier": "standard",
            },
        }
    )
    agent_spec: dict[str, Any] = {
        "description": f"The {name} agent.",
        "systemPrompt": "You are a helpful assistant.",
        "llm": {
            "chain": [_chain_step(names, balance)],
            "parameters": {"temperature": 0.2, "maxTokens": 1024},
        },
        "rateLimitPolicyRef": {"name": f"{name}-limits"},
        "auth": {"apiKeys": {"secretRef": {"name": f"{name}-callers"}}},
        "replicas": 1,
    }
    if guardrails:
        agent_spec["guardrails"] = starter_guardrails()
    if audit_sink is not None:
        agent_spec["audit"] = starter_audit(name, audit_sink)
    if sessions == "redis":
        agent_spec["sessions"] = {
            "store": "redis",
            "redisSecretRef": {"name": f"{name}-sessions-redis", "key": "url"},
        }
    elif sessions == "postgres":
        agent_spec["sessions"] = {
            "store": "postgres",
            "ttl": "24h",
            "postgres": {"dsnSecretRef": {"name": f"{name}-sessions-db", "key": "dsn"}, "poolSize": 10},
        }
    if cache:
        agent_spec["cache"] = starter_cache()
    if oidc_issuer:
        agent_spec["auth"]["oidc"] = {"issuer": oidc_issuer, "audiences": [name]}
        agent_spec["auth"]["authorization"] = starter_authorization(name)
    if tracing:
        agent_spec["tracing"] = starter_tracing(tracing)
    if image or agent_class:
        agent_spec["deployment"] = {k: v for k, v in (("image", image), ("agentClass", agent_class)) if v}
    docs.append(
        {"apiVersion": API_VERSION, "kind": "SentientAgent", "metadata": {"name": name}, "spec": agent_spec}
    )
    return docs


def _provider_document(
    provider: str, provider_type: ProviderKind, source: SourceKind, model: str | None, endpoint: str | None
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": provider_type,
        "endpoint": endpoint or DEFAULT_ENDPOINTS[provider_type],
        "defaultModel": model or DEFAULT_MODELS[provider_type],
        "timeouts": {"connect": "5s", "firstToken": "30s", "idle": "30s", "total": "120s"},
        "retry": {"maxAttempts": 3, "initialBackoff": "200ms", "maxBackoff": "5s"},
    }
    creds = _credentials(source, provider)
    if creds is not None:
        spec["credentials"] = creds
    return {"apiVersion": API_VERSION, "kind": "LLMProvider", "metadata": {"name": provider}, "spec": spec}


def _chain_step(providers: list[str], balance: str) -> dict[str, Any]:
    """The chain's one step: the provider, or every key's provider spread by ``balance``."""
    if len(providers) == 1:
        return {"providerRef": {"name": providers[0]}}
    return {"members": [{"providerRef": {"name": p}} for p in providers], "strategy": balance}


def sessions_steps(name: str, sessions: SessionsKind) -> list[str]:
    """The Secret a shared session store needs (``init`` prints it; the URL is never in agent.yaml)."""
    if sessions == "redis":
        return [
            f"kubectl create secret generic {name}-sessions-redis --from-literal=url='redis://HOST:6379/0'"
        ]
    if sessions == "postgres":
        return [
            f"kubectl create secret generic {name}-sessions-db "
            "--from-literal=dsn='postgresql://USER:PASSWORD@HOST:5432/DB?sslmode=require'"
            "   # the runtime creates its table"
        ]
    return []


def starter_authorization(name: str) -> dict[str, Any]:
    """Starter roles (docs/auth.md): services whose token has the scope ``<name>.chat`` use the
    OpenAI API and /ws; the starter API key uses /assist."""
    return {
        "roles": [
            {
                "name": "service",
                "routes": ["chat", "models", "ws"],
                "claims": [{"claim": "scope", "value": f"{name}.chat"}],
            },
            {"name": "caller", "routes": ["assist", "models"], "apiKeys": [CALLER_KEY_ID]},
        ]
    }


def starter_tracing(endpoint: str) -> dict[str, Any]:
    """Traces to ``endpoint`` (docs/tracing.md): one request in ten recorded unless the caller's
    trace is sampled, no prompt or answer text on the spans."""
    return {"endpoint": endpoint, "samplingRatio": 0.1, "captureContent": False}


def starter_guardrails() -> dict[str, Any]:
    """A starting set of checks (docs/guardrails.md): bounded prompts, injection attempts refused,
    secret keys masked before they reach the model, personal data masked in answers and the audit log."""
    return {
        "input": [
            {"name": "size", "size": {"maxChars": 32000, "maxMessages": 64}},
            {"name": "injection", "injection": {"threshold": 0.5}},
            {"name": "secrets", "pii": {"entities": ["secretKey"]}, "action": "redact"},
        ],
        "output": [
            {
                "name": "pii",
                "pii": {"entities": ["email", "phone", "paymentCard", "iban", "secretKey"]},
                "action": "redact",
            },
        ],
        "redact": {"audit": True},
    }


AuditSinkKind = Literal["syslog", "splunk"]


def starter_audit(name: str, kind: AuditSinkKind) -> dict[str, Any]:
    """One SIEM sink (docs/audit.md): syslog over TLS to a collector, or Splunk HEC; 64 MiB buffer."""
    if kind == "syslog":
        sink: dict[str, Any] = {
            "name": "syslog",
            "syslog": {
                "address": "rsyslog.logging.svc:6514",
                "tls": {"caSecretRef": {"name": f"{name}-siem", "key": "ca.crt"}},
                "structuredData": True,
            },
        }
    else:
        sink = {
            "name": "splunk",
            "http": {
                "url": "https://splunk.example.com:8088",
                "tokenSecretRef": {"name": f"{name}-siem", "key": "hecToken"},
                "index": "security",
            },
        }
    return {"sinks": [{**sink, "maxBufferMiB": 64}]}


def audit_sink_steps(name: str, kind: AuditSinkKind) -> list[str]:
    """How to create the Secret the starter sink reads."""
    if kind == "syslog":
        return [f"kubectl create secret generic {name}-siem --from-file=ca.crt=collector-ca.pem"]
    return [f"kubectl create secret generic {name}-siem --from-literal=hecToken=<your HEC token>"]


def starter_cache() -> dict[str, Any]:
    """The response cache (docs/cache.md): identical requests answered from memory for 10
    minutes, one entry shared by every caller of the agent (``scope: principal`` keeps callers apart)."""
    return {"enabled": True, "backend": "memory", "ttl": "10m", "scope": "agent", "maxEntries": 1000}


def manifest_header(steps: list[str]) -> str:
    """The comment at the top of agent.yaml: the editor's schema line, then the steps that make it work."""
    return SCHEMA_LINE + "# Next steps:\n" + "".join(f"#   {step}\n" for step in steps)


def custom_next_steps(name: str, image: str, out: Path, framework: templates.Framework = "none") -> list[str]:
    """What to do after ``init --custom``: test, run locally, build, deploy."""
    module = name.replace("-", "_") + "_agent"
    run = (
        f"sentient dev {module}.py --fake   # http://127.0.0.1:8080, reloads on save"
        if framework == "none"
        else f"{templates.RUN_LOCALLY[framework]}   # with python -m agent_runtime.testing --port 8000"
    )
    return [
        f"cd {out}",
        "pip install -r requirements.txt   # the runtime, pytest and httpx (see README.md)",
        f"pytest test_{module}.py   # runs your agent in the real runtime, fake upstream",
        run,
        f"docker build -t {image} . && docker push {image}",
        *provider_key_steps(name, "openai", "secret"),
        "kubectl apply -f agent.yaml",
    ]


def dump_documents(docs: list[dict[str, Any]], header: str = "") -> str:
    """A multi-document YAML stream in a stable, readable order."""
    body = "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs)
    return header + body


def custom_agent_files(
    name: str, image: str, framework: templates.Framework = "none", sdk: templates.Sdk = "sentient"
) -> dict[str, str]:
    """Files of a custom-agent project: class, test, Dockerfile, agent.yaml, README, requirements.txt,
    runtime.yaml for local runs, and with a web framework the host app that mounts the agent."""
    n = templates.names(name, image, RUNTIME_IMAGE)
    manifests = agent_manifests(name, image=image, agent_class=f"{n.module}:{n.cls}")
    key_step = provider_key_steps(name, "openai", "secret")[0]
    steps = ["kubectl apply -f agent.yaml  (after building " + image + ")"]
    agent = templates.AGENT_SAF if sdk == "sentient-agent-framework" else templates.AGENT_SDK
    return {
        f"{n.module}.py": agent.format(module=n.module, cls=n.cls),
        f"test_{n.module}.py": templates.test_file(n, framework),
        **templates.app_files(n, framework),
        "Dockerfile": templates.dockerfile(n, framework, sdk),
        "agent.yaml": dump_documents(manifests, header=manifest_header([key_step, *steps])),
        "runtime.yaml": templates.runtime_yaml(n),
        "requirements.txt": templates.requirements(framework, sdk),
        "README.md": templates.readme(n, framework, sdk, key_step, CALLER_KEY_ID),
    }
