"""Runtime configuration: the contract between the operator and the agent runtime.

The operator renders one ``RuntimeConfig`` per SentientAgent into the agent's
ConfigMap (key ``config.yaml``, no secret values) and binds the secret
material into the agent's Secret, whose keys become files in the credentials
directory. Every file a config field names is relative to that directory.

Value types (timeouts, retry, breaker, limits, parameters) are the API's own,
so a field means the same thing in the custom resource and in the running agent.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field

from sentient_operator.api.v1alpha1 import (
    CircuitBreaker,
    CountBy,
    LLMParameters,
    Model,
    ProviderLimits,
    ProviderType,
    RateLimits,
    RetryPolicy,
    Tier,
    Timeouts,
)

CONFIG_FILE_KEY = "config.yaml"
DEFAULT_CONFIG_PATH = "/etc/sentient/config/config.yaml"
DEFAULT_CREDENTIALS_DIR = "/etc/sentient/credentials"

# Keys of the bound Secret (file names in the credentials directory).
API_KEYS_FILE = "apikeys.json"
AUDIT_KEY_FILE = "audit-key"
RATE_LIMIT_REDIS_URL_FILE = "ratelimit-redis-url"
SESSIONS_REDIS_URL_FILE = "sessions-redis-url"


def provider_credential_file(namespace: str, name: str) -> str:
    """Bound-Secret key (and file name) holding one provider's API key."""
    return f"provider.{namespace}.{name}.apiKey"


def provider_ca_file(namespace: str, name: str) -> str:
    """Bound-Secret key (and file name) holding one provider's CA bundle."""
    return f"provider.{namespace}.{name}.ca.pem"


class AgentInfo(Model):
    """Identity of the agent, also served as its agent card."""

    name: str = Field(description="Name of the SentientAgent.")
    namespace: str = Field(default="default", description="Namespace of the SentientAgent.")
    description: str = Field(default="", description="What the agent does.")
    system_prompt: str = Field(default="", description="System prompt (resolved from systemPromptFrom).")
    capabilities: list[str] = Field(default_factory=list, description="Capabilities for the agent card.")
    agent_class: str | None = Field(
        default=None, description="module:Class of a custom agent; the built-in chat agent when unset."
    )


class ProviderTLS(Model):
    """TLS settings of one upstream, with files relative to the credentials directory."""

    ca_file: str | None = Field(default=None, description="PEM CA bundle file.")
    insecure_skip_verify: bool = Field(default=False, description="Skip certificate verification.")


class ProviderConfig(Model):
    """One resolved entry of the failover chain."""

    id: str = Field(description="namespace/name of the LLMProvider; unique within the chain with model.")
    type: ProviderType = Field(description="Wire protocol.")
    endpoint: str = Field(description="Base URL, e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1.")
    model: str = Field(description="Model to request.")
    credential_file: str | None = Field(
        default=None, description="File holding the API key; None for keyless servers."
    )
    default_headers: dict[str, str] = Field(default_factory=dict, description="Extra headers.")
    tls: ProviderTLS = Field(default_factory=ProviderTLS, description="TLS settings.")
    timeouts: Timeouts = Field(default_factory=Timeouts, description="Timeouts.")
    retry: RetryPolicy = Field(default_factory=RetryPolicy, description="Retry policy.")
    circuit_breaker: CircuitBreaker = Field(default_factory=CircuitBreaker, description="Circuit breaker.")
    limits: ProviderLimits | None = Field(default=None, description="Provider-side quota.")


class LLMRuntimeConfig(Model):
    """The chain and sampling parameters."""

    chain: list[ProviderConfig] = Field(min_length=1, description="Ordered failover chain.")
    parameters: LLMParameters = Field(default_factory=LLMParameters, description="Sampling parameters.")


class RateLimitBackendConfig(Model):
    """Counter storage, with the Redis URL as a file."""

    type: Literal["memory", "redis"] = Field(default="memory", description="memory or redis.")
    redis_url_file: str | None = Field(default=None, description="File holding the Redis URL.")
    key_prefix: str = Field(default="sentient:rl:", description="Prefix of limiter keys.")


class RateLimitConfig(Model):
    """A resolved RateLimitPolicy."""

    policy: str = Field(description="namespace/name of the RateLimitPolicy.")
    limits: RateLimits = Field(description="Default limits.")
    count_by: CountBy = Field(default=CountBy.API_KEY, description="What budgets are counted per.")
    tiers: list[Tier] = Field(default_factory=list, description="Per-tier overrides.")
    backend: RateLimitBackendConfig = Field(default_factory=RateLimitBackendConfig, description="Backend.")
    on_redis_unavailable: Literal["failOpen", "failClosed"] = Field(
        default="failOpen", description="Fallback."
    )


class JWTConfig(Model):
    """JWT validation settings."""

    issuer: str
    audiences: list[str]
    jwks_url: str = Field(alias="jwksURL")
    tier_claim: str = "tier"


class AuthRuntimeConfig(Model):
    """Caller authentication."""

    anonymous: bool = Field(default=False, description="Allow unauthenticated callers.")
    api_keys_file: str | None = Field(
        default=None,
        description=(
            "JSON file {keyId: {sha256: hex, tier: str|null}}: API keys are bound hashed, "
            "the pod never holds them in clear."
        ),
    )
    jwt: JWTConfig | None = Field(default=None, description="JWT settings.")


class SessionsRuntimeConfig(Model):
    """Conversation history storage."""

    store: Literal["memory", "redis"] = "memory"
    ttl: str = "1h"
    max_turns: int = 50
    redis_url_file: str | None = None


class ServerConfig(Model):
    """HTTP server settings."""

    port: int = Field(default=8080, description="Port of the API (/assist, /v1/*, probes).")
    metrics_port: int = Field(
        default=9090,
        ge=0,
        le=65535,
        description=(
            "Port of /metrics; 0 serves it on the main port. (An int, not None: the wire form "
            "drops nulls, and a dropped field would come back as the default.)"
        ),
    )
    shutdown_grace: str = Field(default="25s", description="Deadline for in-flight streams on SIGTERM.")
    heartbeat_interval: str = Field(default="15s", description="SSE comment heartbeat on long silences.")


class RuntimeConfig(Model):
    """Everything the agent runtime needs except secret values."""

    agent: AgentInfo
    llm: LLMRuntimeConfig
    rate_limit: RateLimitConfig | None = None
    auth: AuthRuntimeConfig = Field(default_factory=AuthRuntimeConfig)
    sessions: SessionsRuntimeConfig = Field(default_factory=SessionsRuntimeConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    audit_key_file: str | None = Field(default=AUDIT_KEY_FILE, description="HMAC key of the audit chain.")


def config_path() -> Path:
    """Where the config file is (``SENTIENT_CONFIG`` or the in-pod default)."""
    return Path(os.environ.get("SENTIENT_CONFIG", DEFAULT_CONFIG_PATH))


def credentials_dir() -> Path:
    """Where the bound Secret is mounted (``SENTIENT_CREDENTIALS_DIR`` or the in-pod default)."""
    return Path(os.environ.get("SENTIENT_CREDENTIALS_DIR", DEFAULT_CREDENTIALS_DIR))


def parse_config(text: str) -> RuntimeConfig:
    """Parse and validate the YAML text of a runtime config."""
    return RuntimeConfig.model_validate(yaml.safe_load(text))


def load_config(path: Path | None = None) -> RuntimeConfig:
    """Read and validate the runtime config file."""
    return parse_config((path or config_path()).read_text())


def dump_config(config: RuntimeConfig) -> str:
    """The YAML text the operator writes into the ConfigMap."""
    return yaml.safe_dump(config.to_wire(), sort_keys=True)
