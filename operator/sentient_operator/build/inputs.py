"""Resolved inputs of the builders: everything an agent references, already fetched."""

from __future__ import annotations

from dataclasses import dataclass, field

from sentient_operator.api.v1alpha1 import LLMProviderSpec, RateLimitPolicySpec, SentientAgentSpec


@dataclass(frozen=True)
class ResolvedProvider:
    """One chain entry with its LLMProvider and the credential material of its provider Secret."""

    namespace: str
    name: str
    spec: LLMProviderSpec
    model: str
    api_key: str | None = field(default=None, repr=False)
    ca_pem: str | None = field(default=None, repr=False)
    fingerprint: str | None = None
    # Share of its step's requests, for a member of a load-balanced step (None: a plain entry).
    weight: int | None = None

    @property
    def id(self) -> str:
        """``namespace/name`` of the provider."""
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ResolvedPolicy:
    """A RateLimitPolicy and, for the Redis backend, its Redis URL (standalone) and other Redis files.

    ``redis_files`` maps bound-Secret keys to values: passwords and CA of cluster and sentinel mode.
    """

    namespace: str
    name: str
    spec: RateLimitPolicySpec
    redis_url: str | None = field(default=None, repr=False)
    redis_files: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class APIKey:
    """A caller API key (in clear only in operator memory; bound hashed) and its tier."""

    key: str = field(repr=False)
    tier: str | None = None


@dataclass(frozen=True)
class AgentInputs:
    """A SentientAgent together with everything resolved for it."""

    name: str
    namespace: str
    uid: str
    spec: SentientAgentSpec
    providers: list[ResolvedProvider]
    image: str
    policy: ResolvedPolicy | None = None
    system_prompt: str = ""
    api_keys: dict[str, APIKey] = field(default_factory=dict, repr=False)
    sessions_redis_url: str | None = field(default=None, repr=False)
    sessions_redis_files: dict[str, str] = field(default_factory=dict, repr=False)
    # Bound-Secret files of the audit sinks (tokens, CA bundles).
    audit_sink_files: dict[str, str] = field(default_factory=dict, repr=False)
    sessions_postgres_dsn: str | None = field(default=None, repr=False)
    # The response cache's Redis files (URL, passwords, CA) by bound-Secret key.
    cache_redis_files: dict[str, str] = field(default_factory=dict, repr=False)
    # The tracing exporter's headers (JSON object, from spec.tracing.headersSecretRef), or None.
    tracing_headers: str | None = field(default=None, repr=False)
    audit_key: str = field(default="", repr=False)
    oidc_client_secret: str | None = field(default=None, repr=False)
    credentials_fingerprint: str | None = None
    service_monitor_available: bool = False
