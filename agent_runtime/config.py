"""Runtime configuration: the contract between the operator and the agent runtime.

The operator renders one ``RuntimeConfig`` per SentientAgent into the agent's
ConfigMap (key ``config.yaml``, no secret values) and binds the secret
material into the agent's Secret, whose keys become files in the credentials
directory. Every file a config field names is relative to that directory.

The runtime owns this schema (the operator imports it to render it, never the
reverse), so that the two can be upgraded apart:

- ``configVersion`` says which schema the file was rendered for (1 for files
  written before the field existed);
- a field this runtime does not know, at any nesting level, is ignored with
  one logged warning naming its path: an operator that adds a field does not
  stop older runtime images (users' custom-agent images included);
- fields it knows are validated strictly: no type coercion ("5" is not 5),
  bounds and duration syntax checked, so a wrong value fails loudly.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

log = logging.getLogger("agent_runtime.config")

# The schema version this runtime renders and reads; bump it when a field changes meaning.
CONFIG_VERSION = 1


# ----------------------------------------------------------------------------- value types

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN, max_length=32)]
ProviderType = Literal["openai", "anthropic", "openai-compatible"]
RetryClass = Literal["429", "5xx", "connect-error", "timeout", "reset"]
CountByName = Literal["apiKey", "user", "session", "agent"]


def parse_duration(value: str) -> timedelta:
    """Parse a Go-style duration such as ``"1m30s"`` or ``"250ms"``.

    Raises ``ValueError`` naming the value when it is not a duration.
    """
    if not isinstance(value, str) or not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(f"invalid duration {value!r}: use e.g. '500ms', '30s', '5m', '1h30m'")
    seconds = sum(float(num) * _UNIT_SECONDS[unit] for num, unit in _DURATION_PART.findall(value))
    return timedelta(seconds=seconds)


def duration_seconds(value: str) -> float:
    """Seconds in a Go-style duration string."""
    return parse_duration(value).total_seconds()


class CountBy(StrEnum):
    """What a rate-limit budget is counted per."""

    API_KEY = "apiKey"
    USER = "user"
    SESSION = "session"
    AGENT = "agent"


class ConfigModel(BaseModel):
    """Base of every config object: camelCase on the wire, strict on known fields, tolerant of others.

    Unknown fields are kept by pydantic (``extra="allow"``) only until :func:`parse_config` has
    named them in its warning and dropped them.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        strict=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as it appears in YAML/JSON: camelCase, unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    def unknown_fields(self, path: str = "") -> Iterator[str]:
        """Paths (wire names) of the fields this runtime does not know, at any depth."""
        for name in self.model_extra or {}:
            yield f"{path}{name}"
        for name, info in type(self).model_fields.items():
            yield from _unknown_in(getattr(self, name), f"{path}{info.alias or name}")

    def drop_unknown_fields(self) -> None:
        """Forget the unknown fields, at any depth (they must not come back in a dump or a comparison)."""
        if self.__pydantic_extra__:
            self.__pydantic_extra__.clear()
        for name in type(self).model_fields:
            for child in _models_in(getattr(self, name)):
                child.drop_unknown_fields()


def _models_in(value: object) -> Iterator[ConfigModel]:
    if isinstance(value, ConfigModel):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _models_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _models_in(item)


def _unknown_in(value: object, path: str) -> Iterator[str]:
    if isinstance(value, ConfigModel):
        yield from value.unknown_fields(path + ".")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _unknown_in(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _unknown_in(item, f"{path}.{key}")


class Timeouts(ConfigModel):
    """Timeouts for one upstream call."""

    connect: Duration = Field(default="5s", description="TCP and TLS connect timeout.")
    first_token: Duration = Field(default="30s", description="Longest wait for the first streamed token.")
    idle: Duration = Field(default="30s", description="Longest gap between two streamed chunks.")
    total: Duration = Field(default="300s", description="Deadline of a whole request, retries included.")

    @model_validator(mode="after")
    def _order(self) -> Timeouts:
        total = parse_duration(self.total)
        if parse_duration(self.connect) > total or parse_duration(self.first_token) > total:
            raise ValueError("timeouts: connect and firstToken must not exceed total")
        if min(parse_duration(d) for d in (self.connect, self.first_token, self.idle)) <= timedelta(0):
            raise ValueError("timeouts: connect, firstToken and idle must be greater than 0s")
        return self


def _all_retry_classes() -> list[RetryClass]:
    return ["429", "5xx", "connect-error", "timeout", "reset"]


class RetryPolicy(ConfigModel):
    """Retries against one provider before failing over to the next chain entry."""

    max_attempts: int = Field(
        default=3, ge=1, le=10, description="Attempts per provider, the first included."
    )
    initial_backoff: Duration = Field(default="200ms", description="Backoff before the first retry.")
    max_backoff: Duration = Field(default="5s", description="Upper bound of the backoff.")
    retry_on: list[RetryClass] = Field(
        default_factory=_all_retry_classes, max_length=5, description="Error classes retried."
    )

    @model_validator(mode="after")
    def _order(self) -> RetryPolicy:
        if parse_duration(self.initial_backoff) > parse_duration(self.max_backoff):
            raise ValueError("retry: initialBackoff must not exceed maxBackoff")
        return self


class CircuitBreaker(ConfigModel):
    """Circuit breaker per (provider, model)."""

    failure_threshold: int = Field(default=5, ge=1, le=1000, description="Failures that open the breaker.")
    window: Duration = Field(default="60s", description="Sliding window failures are counted in.")
    cooldown: Duration = Field(default="30s", description="Time open before going half-open.")
    half_open_requests: int = Field(default=1, ge=1, le=100, description="Trial requests while half-open.")


class ProviderLimits(ConfigModel):
    """Provider-side quota, shared by every agent and replica that uses the provider."""

    requests_per_minute: int | None = Field(default=None, ge=1, le=100_000_000)
    tokens_per_minute: int | None = Field(default=None, ge=1, le=10_000_000_000)


class RateLimits(ConfigModel):
    """Request and token budgets."""

    requests_per_minute: int | None = Field(default=None, ge=1, le=100_000_000)
    tokens_per_minute: int | None = Field(default=None, ge=1, le=10_000_000_000)
    burst: int | None = Field(default=None, ge=1, le=100_000_000)
    concurrency: int | None = Field(default=None, ge=1, le=1_000_000)

    def is_empty(self) -> bool:
        """No budget set at all."""
        return (
            self.requests_per_minute is None and self.tokens_per_minute is None and self.concurrency is None
        )


class Tier(ConfigModel):
    """Limits selected by the caller's tier; an unset field falls back to the policy's limits."""

    name: str = Field(min_length=1, max_length=63)
    limits: RateLimits


class LLMParameters(ConfigModel):
    """Sampling parameters sent to every provider of the chain."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=1024, ge=1, le=1_000_000)
    top_p: float | None = Field(default=None, ge=0, le=1)


CONFIG_FILE_KEY = "config.yaml"
DEFAULT_CONFIG_PATH = "/etc/sentient/config/config.yaml"
DEFAULT_CREDENTIALS_DIR = "/etc/sentient/credentials"

# Keys of the bound Secret (file names in the credentials directory).
API_KEYS_FILE = "apikeys.json"
AUDIT_KEY_FILE = "audit-key"
OIDC_CLIENT_SECRET_FILE = "oidc-client-secret"  # noqa: S105 (a file name, not a secret)
RATE_LIMIT_REDIS_URL_FILE = "ratelimit-redis-url"
SESSIONS_REDIS_URL_FILE = "sessions-redis-url"
# The other Redis files of a use (``ratelimit`` or ``sessions``): password, Sentinel password, CA.
RATE_LIMIT_REDIS = "ratelimit"
SESSIONS_REDIS = "sessions"
CACHE_REDIS = "cache"


def redis_url_file(use: str) -> str:
    """Bound-Secret key of the standalone URL of a Redis use (``ratelimit``, ``sessions``)."""
    return f"{use}-redis-url"


def redis_password_file(use: str) -> str:
    """Bound-Secret key of the data nodes' password of a Redis use (``ratelimit``, ``sessions``)."""
    return f"{use}-redis-password"


def redis_sentinel_password_file(use: str) -> str:
    """Bound-Secret key of the Sentinels' password of a Redis use."""
    return f"{use}-redis-sentinel-password"


def redis_ca_file(use: str) -> str:
    """Bound-Secret key of the CA bundle of a Redis use."""
    return f"{use}-redis-ca.pem"


def provider_credential_file(namespace: str, name: str) -> str:
    """Bound-Secret key (and file name) holding one provider's API key."""
    return f"provider.{namespace}.{name}.apiKey"


def provider_ca_file(namespace: str, name: str) -> str:
    """Bound-Secret key (and file name) holding one provider's CA bundle."""
    return f"provider.{namespace}.{name}.ca.pem"


class AgentInfo(ConfigModel):
    """Identity of the agent, also served as its agent card."""

    name: str = Field(description="Name of the SentientAgent.")
    namespace: str = Field(default="default", description="Namespace of the SentientAgent.")
    description: str = Field(default="", description="What the agent does.")
    system_prompt: str = Field(default="", description="System prompt (resolved from systemPromptFrom).")
    capabilities: list[str] = Field(default_factory=list, description="Capabilities for the agent card.")
    agent_class: str | None = Field(
        default=None, description="module:Class of a custom agent; the built-in chat agent when unset."
    )


class ProviderTLS(ConfigModel):
    """TLS settings of one upstream, with files relative to the credentials directory."""

    ca_file: str | None = Field(default=None, description="PEM CA bundle file.")
    insecure_skip_verify: bool = Field(default=False, description="Skip certificate verification.")


# A money amount as a decimal string with at most six decimals ("2.50", "0.000150"): read into
# integer micro-units (agent_runtime/spend.py), never into a float.
AMOUNT_PATTERN = r"^[0-9]{1,10}(\.[0-9]{1,6})?$"
Amount = Annotated[str, StringConstraints(pattern=AMOUNT_PATTERN, max_length=17)]
# ISO 4217 alphabetic code (or any three capitals: an internal unit such as "CRD").
CURRENCY_PATTERN = r"^[A-Z]{3}$"
Currency = Annotated[str, StringConstraints(pattern=CURRENCY_PATTERN)]


class ModelPrice(ConfigModel):
    """Price of one model: currency units per million input and per million output tokens."""

    currency: Currency = Field(default="USD", description="ISO 4217 code of the prices.")
    input_per_million: Amount = Field(description="Price of one million input (prompt) tokens.")
    output_per_million: Amount = Field(description="Price of one million output (completion) tokens.")


class ProviderConfig(ConfigModel):
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
    weight: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Share of its step's requests (load-balanced steps, llm.steps); 1 when unset.",
    )
    price: ModelPrice | None = Field(
        default=None, description="Price of this entry's model; spend budgets count it as free when unset."
    )


BalanceStrategy = Literal["weight", "leastOutstanding", "lowestLatency"]
BALANCE_STRATEGIES: tuple[BalanceStrategy, ...] = ("weight", "leastOutstanding", "lowestLatency")
# Members of one load-balanced step.
MAX_STEP_MEMBERS = 16


class ChainStep(ConfigModel):
    """One step of the failover chain: ``size`` consecutive chain entries spread by ``strategy``.

    See docs/load-balancing.md for the strategies and the failover order inside a step.
    """

    size: int = Field(ge=1, le=MAX_STEP_MEMBERS, description="Chain entries in this step, in chain order.")
    strategy: BalanceStrategy = Field(
        default="weight",
        description="weight (smooth weighted round robin), leastOutstanding or lowestLatency.",
    )
    latency_half_life: Duration = Field(
        default="10s",
        description="lowestLatency: a latency sample this old counts half as much as a new one.",
    )
    probe_interval: Duration = Field(
        default="5s",
        description="lowestLatency: a member not chosen for this long gets the next request (re-probe).",
    )

    @model_validator(mode="after")
    def _positive(self) -> ChainStep:
        if duration_seconds(self.latency_half_life) <= 0 or duration_seconds(self.probe_interval) <= 0:
            raise ValueError("llm.steps: latencyHalfLife and probeInterval must be greater than 0s")
        return self


class LLMRuntimeConfig(ConfigModel):
    """The chain and sampling parameters."""

    chain: list[ProviderConfig] = Field(min_length=1, description="Ordered failover chain.")
    parameters: LLMParameters = Field(default_factory=LLMParameters, description="Sampling parameters.")
    reveal_provider: bool = Field(
        default=False,
        description=(
            "Name the chain entry that answered (provider id, upstream model) in the /assist stream's "
            "metadata, and the chain's providers in /health. Off: callers learn that a failover happened "
            "and its error class, never which provider or model. Upstream URLs are never sent either way."
        ),
    )
    steps: list[ChainStep] | None = Field(
        default=None,
        description=(
            "How the chain's entries group into steps, in order (their sizes add up to the chain's "
            "length); unset: every entry is a step of its own. A runtime that does not know this field "
            "walks the members of a step in order: failover still works, without the spread."
        ),
    )

    @model_validator(mode="after")
    def _steps_cover_chain(self) -> LLMRuntimeConfig:
        if self.steps is not None and sum(step.size for step in self.steps) != len(self.chain):
            raise ValueError("llm.steps: the step sizes must add up to the number of chain entries")
        return self


RedisMode = Literal["standalone", "cluster", "sentinel"]
# host:port, host a name, an IPv4 address or a bracketed IPv6 address.
HOST_PORT_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?):[0-9]{1,5}$"
HostPort = Annotated[str, StringConstraints(pattern=HOST_PORT_PATTERN, max_length=261)]


class RedisTLSConfig(ConfigModel):
    """TLS towards Redis in cluster and sentinel mode (standalone says rediss:// in its URL)."""

    enabled: bool = Field(default=False, description="Connect with TLS.")
    ca_file: str | None = Field(
        default=None, description="PEM CA bundle file; the system trust store when unset."
    )
    insecure_skip_verify: bool = Field(default=False, description="Skip certificate verification.")


class RedisConnectionConfig(ConfigModel):
    """Where a Redis deployment is and how to log in, with every secret as a file.

    - ``standalone``: one server, the whole URL (password, ``rediss://`` for TLS, db) in ``urlFile``;
    - ``cluster``: Redis Cluster, discovered from the seed ``nodes``; keys are hash-tagged so that
      every atomic script touches one slot;
    - ``sentinel``: the master named ``masterName``, found through the ``sentinels`` and followed
      across failovers.
    """

    mode: RedisMode = Field(default="standalone", description="standalone, cluster or sentinel.")
    url_file: str | None = Field(default=None, description="standalone: file holding the Redis URL.")
    nodes: list[HostPort] = Field(
        default_factory=list, max_length=64, description="cluster: seed nodes (host:port)."
    )
    sentinels: list[HostPort] = Field(
        default_factory=list, max_length=64, description="sentinel: the Sentinel addresses (host:port)."
    )
    master_name: str | None = Field(
        default=None, min_length=1, max_length=253, description="sentinel: the monitored master's name."
    )
    username: str | None = Field(
        default=None, min_length=1, max_length=253, description="ACL user (cluster, sentinel)."
    )
    password_file: str | None = Field(
        default=None, description="File holding the password of the data nodes (cluster, sentinel)."
    )
    sentinel_password_file: str | None = Field(
        default=None, description="sentinel: file holding the Sentinels' own password, if they require one."
    )
    tls: RedisTLSConfig = Field(default_factory=RedisTLSConfig, description="TLS (cluster, sentinel).")

    @model_validator(mode="after")
    def _fields_of_mode(self) -> RedisConnectionConfig:
        if self.mode == "standalone" and not self.url_file:
            raise ValueError("redis: standalone mode needs urlFile")
        if self.mode == "cluster" and not self.nodes:
            raise ValueError("redis: cluster mode needs at least one seed node in nodes")
        if self.mode == "sentinel" and (not self.sentinels or not self.master_name):
            raise ValueError("redis: sentinel mode needs sentinels and masterName")
        return self


def redis_connection(
    redis: RedisConnectionConfig | None, url_file: str | None
) -> RedisConnectionConfig | None:
    """``redis`` when set, else a standalone connection on ``url_file`` (the older form), else None."""
    if redis is not None:
        return redis
    if url_file:
        return RedisConnectionConfig(mode="standalone", url_file=url_file)
    return None


class RateLimitBackendConfig(ConfigModel):
    """Counter storage: memory, or Redis (a standalone URL file, or a ``redis`` connection)."""

    type: Literal["memory", "redis"] = Field(default="memory", description="memory or redis.")
    redis_url_file: str | None = Field(
        default=None, description="File holding the Redis URL (standalone; the form older runtimes read)."
    )
    redis: RedisConnectionConfig | None = Field(
        default=None, description="Redis connection in any mode; takes precedence over redisUrlFile."
    )
    key_prefix: str = Field(
        default="sentient:rl:",
        pattern=r"^[^{}]*$",
        description="Prefix of limiter keys (no braces: they would break the Redis Cluster hash tags).",
    )

    def connection(self) -> RedisConnectionConfig | None:
        """The Redis connection in force, whichever form the config used; None without one."""
        return redis_connection(self.redis, self.redis_url_file)


BudgetPer = Literal["apiKey", "user", "tier", "agent"]


class SpendBudget(ConfigModel):
    """A spend limit per calendar day and/or month (UTC), in one currency, counted per ``per``."""

    name: str = Field(min_length=1, max_length=63, description="Name of the budget (metrics, errors).")
    per: BudgetPer = Field(default="agent", description="apiKey, user, tier or agent (one shared budget).")
    tiers: list[str] = Field(
        default_factory=list, description="Only callers of these tiers are counted; every caller when empty."
    )
    currency: Currency = Field(default="USD", description="Only models priced in this currency count.")
    per_day: Amount | None = Field(default=None, description="Spend per UTC calendar day.")
    per_month: Amount | None = Field(default=None, description="Spend per UTC calendar month.")


class RateLimitConfig(ConfigModel):
    """A resolved RateLimitPolicy."""

    policy: str = Field(description="namespace/name of the RateLimitPolicy.")
    limits: RateLimits = Field(description="Default limits.")
    count_by: CountByName = Field(
        default="apiKey", description="What budgets are counted per (a CountBy value)."
    )
    tiers: list[Tier] = Field(default_factory=list, description="Per-tier overrides.")
    backend: RateLimitBackendConfig = Field(default_factory=RateLimitBackendConfig, description="Backend.")
    on_redis_unavailable: Literal["failOpen", "failClosed"] = Field(
        default="failOpen", description="Fallback."
    )
    budgets: list[SpendBudget] = Field(default_factory=list, description="Spend budgets.")


class JWTConfig(ConfigModel):
    """JWT validation settings."""

    issuer: str
    audiences: list[str]
    jwks_url: str = Field(alias="jwksURL")
    tier_claim: str = "tier"


class IntrospectionConfig(ConfigModel):
    """RFC 7662 token introspection of opaque access tokens, with a short cache."""

    endpoint: str | None = Field(
        default=None,
        description="Introspection URL; the discovery document's introspection_endpoint when unset.",
    )
    client_id: str = Field(
        alias="clientID", min_length=1, description="Client ID the runtime introspects as."
    )
    client_secret_file: str = Field(
        description="File holding the client secret (HTTP Basic to the endpoint)."
    )
    cache_ttl: Duration = Field(
        default="30s",
        alias="cacheTTL",
        description="How long an active answer is reused (never past the token's exp).",
    )
    negative_cache_ttl: Duration = Field(
        default="5s", alias="negativeCacheTTL", description="How long an inactive answer is reused."
    )
    max_entries: int = Field(default=10000, ge=1, le=1_000_000, description="Cached answers at most.")
    timeout: Duration = Field(default="3s", description="Deadline of one introspection call.")


class OIDCConfig(ConfigModel):
    """OAuth2 / OpenID Connect bearer tokens: JWTs checked against the issuer's keys, opaque ones introspected."""

    issuer: str = Field(description="Expected issuer; its discovery document gives the JWKS URL.")
    audiences: list[str] = Field(min_length=1, description="Accepted aud values; a token must carry one.")
    jwks_url: str | None = Field(
        default=None, alias="jwksURL", description="JWKS URL; the discovery document's jwks_uri when unset."
    )
    introspection: IntrospectionConfig | None = Field(
        default=None, description="Introspection of opaque tokens; opaque tokens are refused when unset."
    )
    tier_claim: str = Field(default="tier", description="Claim naming the caller's rate-limit tier.")
    jwks_ttl: Duration = Field(
        default="5m", alias="jwksTTL", description="How long fetched signing keys are kept."
    )
    jwks_min_refresh: Duration = Field(
        default="10s", description="Shortest interval between two JWKS fetches caused by an unknown kid."
    )


AuthRouteName = Literal["assist", "chat", "models", "ws"]
AUTH_ROUTES: dict[str, AuthRouteName] = {
    "/assist": "assist",
    "/v1/chat/completions": "chat",
    "/v1/models": "models",
    "/ws": "ws",
}


class ClaimGrant(ConfigModel):
    """A token whose ``claim`` holds ``value`` (a string, a space-separated scope or a list) gets the role."""

    claim: str = Field(min_length=1, description="Claim name; a dotted path reaches into objects.")
    value: str = Field(min_length=1, description="Value the claim must hold.")


class RoleConfig(ConfigModel):
    """One role: what it allows, and who is granted it."""

    name: str = Field(min_length=1, max_length=63, description="Role name (audit log).")
    routes: list[AuthRouteName] = Field(default_factory=list, description="Routes allowed; all when empty.")
    models: list[str] = Field(
        default_factory=list, description="Model names a caller may request (OpenAI model); any when empty."
    )
    tier: str | None = Field(default=None, description="Rate-limit tier of callers acting in this role.")
    api_keys: list[str] = Field(default_factory=list, description="API key IDs granted this role.")
    claims: list[ClaimGrant] = Field(default_factory=list, description="Token claims granting this role.")


class AuthorizationConfig(ConfigModel):
    """Roles of the agent's callers; a caller holding no role that allows the request is refused (403)."""

    roles: list[RoleConfig] = Field(min_length=1, description="Roles, in order of preference.")


class AuthRuntimeConfig(ConfigModel):
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
    oidc: OIDCConfig | None = Field(default=None, description="OAuth2 / OIDC bearer tokens.")
    authorization: AuthorizationConfig | None = Field(
        default=None, description="Roles; every authenticated caller may use every route when unset."
    )


# Bound-Secret key of the PostgreSQL DSN of the session store.
SESSIONS_POSTGRES_DSN_FILE = "sessions-postgres-dsn"
# A PostgreSQL name the runtime may splice into SQL (it quotes it too); at most 40 characters so
# that the names derived from the table (<table>_schema_version, <table>_expires_at_idx) fit in 63.
POSTGRES_IDENTIFIER_PATTERN = r"^[a-z_][a-z0-9_]{0,39}$"


class PostgresSessionsConfig(ConfigModel):
    """The PostgreSQL database of the session store."""

    dsn_file: str = Field(
        default=SESSIONS_POSTGRES_DSN_FILE,
        description="File (in the credentials directory) holding the postgresql:// DSN; never in the config.",
    )
    pool_size: int = Field(default=10, ge=1, le=100, description="Most connections per runtime process.")
    schema_name: str = Field(
        default="public", pattern=POSTGRES_IDENTIFIER_PATTERN, description="Schema of the sessions table."
    )
    table_name: str = Field(
        default="sentient_sessions",
        pattern=POSTGRES_IDENTIFIER_PATTERN,
        description="Table of the sessions; its migrations are recorded in <table>_schema_version.",
    )


class SessionsRuntimeConfig(ConfigModel):
    """Conversation history storage."""

    store: Literal["memory", "redis", "postgres"] = "memory"
    ttl: Duration = "1h"
    max_turns: int = 50
    redis_url_file: str | None = None
    redis: RedisConnectionConfig | None = Field(
        default=None, description="Redis connection in any mode; takes precedence over redisUrlFile."
    )
    postgres: PostgresSessionsConfig | None = Field(
        default=None, description="PostgreSQL database; required when store is postgres."
    )

    @model_validator(mode="after")
    def _postgres(self) -> SessionsRuntimeConfig:
        if self.store == "postgres" and self.postgres is None:
            raise ValueError("sessions: postgres is required when store is postgres")
        return self

    def connection(self) -> RedisConnectionConfig | None:
        """The Redis connection in force, whichever form the config used; None without one."""
        return redis_connection(self.redis, self.redis_url_file)


class CacheRuntimeConfig(ConfigModel):
    """The response cache: exact-match answers of the chain, replayed on a hit (off when unset)."""

    backend: Literal["memory", "redis"] = Field(
        default="memory", description="memory (per process) or redis (shared by every replica)."
    )
    ttl: Duration = Field(default="5m", description="How long an answer is served from the cache.")
    scope: Literal["agent", "principal"] = Field(
        default="agent",
        description="agent: one entry serves every caller; principal: each caller has its own entries.",
    )
    max_entries: int = Field(default=1000, ge=1, le=1_000_000, description="memory: entries kept (LRU).")
    max_bytes: int = Field(
        default=64 << 20, ge=1024, le=1 << 34, description="memory: bytes of answers kept (LRU)."
    )
    max_entry_bytes: int = Field(
        default=1 << 20, ge=256, le=64 << 20, description="Answers larger than this are not stored."
    )
    redis: RedisConnectionConfig | None = Field(default=None, description="redis: the connection.")
    key_prefix: str = Field(
        default="sentient:cache:",
        pattern=r"^[^{}]*$",
        max_length=128,
        description="Prefix of the cache's Redis keys (no braces: the Cluster hash tag follows it).",
    )

    @model_validator(mode="after")
    def _backend(self) -> CacheRuntimeConfig:
        if self.backend == "redis" and self.redis is None:
            raise ValueError("cache: the redis backend needs redis")
        if self.max_entry_bytes > self.max_bytes:
            raise ValueError("cache: maxEntryBytes must not exceed maxBytes")
        return self


class ServerLimits(ConfigModel):
    """Bounds on what a client may cost the server before (and while) its request is read.

    They apply to every connection before any authentication: a client that sends its request
    slowly, sends huge headers, or just holds connections open is cut off.
    """

    header_timeout: Duration = Field(
        default="10s",
        description="Time to receive the request line and headers, from the connection's (or request's) first byte.",
    )
    body_timeout: Duration = Field(
        default="30s", description="Time to receive the request body once the headers are in."
    )
    keep_alive_timeout: Duration = Field(
        default="5s", description="How long an idle keep-alive connection is kept between requests."
    )
    max_header_bytes: int = Field(
        default=65536,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest request line plus headers, in bytes; larger is refused with 431.",
    )
    max_connections: int = Field(
        default=1024,
        ge=1,
        le=1_000_000,
        description="Concurrent connections per server; more are closed at once.",
    )

    @model_validator(mode="after")
    def _positive(self) -> ServerLimits:
        for name in ("header_timeout", "body_timeout", "keep_alive_timeout"):
            if duration_seconds(getattr(self, name)) <= 0:
                raise ValueError(f"server.limits: {to_camel(name)} must be greater than 0s")
        return self


# Longest busy poll (server.busyPoll): past this the loop would spin longer than any wait it saves.
MAX_BUSY_POLL_SECONDS = 0.01
# Worker processes of one runtime (server.workers); each holds its own connections and caches.
MAX_WORKERS = 32


class ServerConfig(ConfigModel):
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
    shutdown_grace: Duration = Field(default="25s", description="Deadline for in-flight streams on SIGTERM.")
    workers: int = Field(
        default=1,
        ge=1,
        le=MAX_WORKERS,
        description=(
            "Server processes sharing the API port (SO_REUSEPORT), so that one pod can use more than "
            "one CPU. Redis rate limits and sessions stay exact; the memory backends are per process."
        ),
    )
    heartbeat_interval: Duration = Field(default="15s", description="SSE comment heartbeat on long silences.")
    busy_poll: Duration = Field(
        default="1ms",
        description=(
            "How long the event loop polls instead of sleeping after a request starts or ends; 0s "
            "turns it off. It saves a wake-up per wait when requests take well under a millisecond "
            "(cached answers, refusals, a fast upstream), spends that time as CPU "
            "(sentient_busy_poll_seconds_total), and backs off by itself when waits are longer."
        ),
    )
    limits: ServerLimits = Field(
        default_factory=ServerLimits,
        description="Bounds on slow or greedy clients (timeouts, header size, connections).",
    )

    @model_validator(mode="after")
    def _busy_poll_bounded(self) -> ServerConfig:
        if duration_seconds(self.busy_poll) > MAX_BUSY_POLL_SECONDS:
            raise ValueError(f"server.busyPoll: at most {MAX_BUSY_POLL_SECONDS * 1000:g}ms")
        return self


# ----------------------------------------------------------------------------- guardrails

GuardrailAction = Literal["block", "redact", "flag"]
PIIEntity = Literal["email", "phone", "paymentCard", "iban", "secretKey"]
PII_ENTITIES: tuple[PIIEntity, ...] = ("email", "phone", "paymentCard", "iban", "secretKey")
GUARDRAIL_KINDS = ("size", "patterns", "pii", "injection", "moderation")
MAX_GUARDRAIL_PATTERNS = 64
CHECK_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def _all_pii_entities() -> list[PIIEntity]:
    return list(PII_ENTITIES)


class SizeCheck(ConfigModel):
    """Size and structure limits of the checked text (the caller's messages, or the answer)."""

    max_chars: int | None = Field(default=None, ge=1, le=10_000_000, description="Characters in all.")
    max_messages: int | None = Field(default=None, ge=1, le=10_000, description="Messages in a request.")
    max_lines: int | None = Field(default=None, ge=1, le=1_000_000, description="Lines in all.")
    max_line_chars: int | None = Field(
        default=None, ge=1, le=10_000_000, description="Characters in one line (minified payloads)."
    )


def pattern_problem(pattern: str) -> str | None:
    """Why a guardrail pattern is refused (it does not compile, or its cost is unbounded), or None."""
    from agent_runtime.guardrails.regex import PatternError, check_bounded

    try:
        check_bounded(pattern)
    except PatternError as exc:
        return str(exc)
    return None


def check_patterns(patterns: list[str], what: str) -> None:
    """Raise ``ValueError`` naming ``what[index]`` for the first pattern :func:`pattern_problem` refuses."""
    for index, pattern in enumerate(patterns):
        problem = pattern_problem(pattern)
        if problem is not None:
            raise ValueError(f"{what}[{index}]: {problem}")


class PatternCheck(ConfigModel):
    """Deny patterns (regular expressions); a deny match inside an allow match is ignored."""

    deny: list[str] = Field(default_factory=list, max_length=MAX_GUARDRAIL_PATTERNS)
    allow: list[str] = Field(default_factory=list, max_length=MAX_GUARDRAIL_PATTERNS)

    @model_validator(mode="after")
    def _compile(self) -> PatternCheck:
        if not self.deny:
            raise ValueError("patterns: deny must list at least one pattern")
        check_patterns(self.deny, "patterns.deny")
        check_patterns(self.allow, "patterns.allow")
        return self


class PIICheck(ConfigModel):
    """Personal data and secrets found in the text; ``allow`` patterns keep the values they match."""

    entities: list[PIIEntity] = Field(default_factory=_all_pii_entities, min_length=1, max_length=5)
    allow: list[str] = Field(default_factory=list, max_length=MAX_GUARDRAIL_PATTERNS)

    @model_validator(mode="after")
    def _compile(self) -> PIICheck:
        check_patterns(self.allow, "pii.allow")
        return self


class InjectionCheck(ConfigModel):
    """Prompt-injection heuristics; the check fires when the score reaches ``threshold``."""

    threshold: float = Field(default=0.5, ge=0.05, le=1.0)


class ModerationCheck(ConfigModel):
    """A call to the moderation service (``guardrails.moderation``)."""

    categories: list[str] = Field(
        default_factory=list, max_length=32, description="Categories that count; empty: any flagged one."
    )
    threshold: float | None = Field(
        default=None, ge=0, le=1, description="Category score that counts; unset: the service's flag."
    )


class GuardrailCheck(ConfigModel):
    """One check: exactly one kind (size, patterns, pii, injection, moderation) and an action."""

    name: Annotated[str, StringConstraints(pattern=CHECK_NAME_PATTERN, max_length=63)] | None = Field(
        default=None, description="Name in metrics and the audit log; the kind when unset."
    )
    action: GuardrailAction = Field(default="block", description="block, redact or flag.")
    size: SizeCheck | None = None
    patterns: PatternCheck | None = None
    pii: PIICheck | None = None
    injection: InjectionCheck | None = None
    moderation: ModerationCheck | None = None

    @property
    def kind(self) -> str:
        """The kind of check that is set."""
        return next(k for k in GUARDRAIL_KINDS if getattr(self, k) is not None)

    @property
    def label(self) -> str:
        """The check's name in metrics and the audit log."""
        return self.name or self.kind

    @model_validator(mode="after")
    def _one_kind(self) -> GuardrailCheck:
        if sum(getattr(self, k) is not None for k in GUARDRAIL_KINDS) != 1:
            raise ValueError("a guardrail check sets exactly one of " + ", ".join(GUARDRAIL_KINDS))
        if self.action == "redact" and self.kind not in ("pii", "patterns"):
            raise ValueError("action redact applies to pii and patterns checks only")
        return self


class ModerationService(ConfigModel):
    """An OpenAI-compatible ``/moderations`` endpoint."""

    endpoint: str = Field(description="Base URL, e.g. https://api.openai.com/v1 (``/moderations`` is added).")
    model: str | None = Field(default=None, max_length=256, description="Moderation model.")
    credential_file: str | None = Field(default=None, description="File holding the API key.")
    tls: ProviderTLS = Field(default_factory=ProviderTLS, description="TLS settings.")
    timeout: Duration = Field(default="2s", description="Deadline of one moderation call.")
    on_error: Literal["failOpen", "failClosed"] = Field(
        default="failOpen",
        description="failOpen passes the text when the service fails; failClosed blocks it.",
    )


class GuardrailRedaction(ConfigModel):
    """Where personal data and secrets are masked besides prompts and answers."""

    logs: bool = Field(default=False, description="Mask them in the runtime's log lines.")
    audit: bool = Field(default=False, description="Mask them in audit records.")
    entities: list[PIIEntity] = Field(default_factory=_all_pii_entities, min_length=1, max_length=5)


class GuardrailsConfig(ConfigModel):
    """The validation pipeline: ordered input and output checks."""

    input: list[GuardrailCheck] = Field(default_factory=list, max_length=32)
    output: list[GuardrailCheck] = Field(default_factory=list, max_length=32)
    moderation: ModerationService | None = None
    redact: GuardrailRedaction = Field(default_factory=GuardrailRedaction)
    stream_window: int = Field(
        default=128,
        ge=16,
        le=4096,
        description="Characters of a streamed answer withheld until the output checks have seen what follows.",
    )

    @model_validator(mode="after")
    def _rules(self) -> GuardrailsConfig:
        for stage, checks in (("input", self.input), ("output", self.output)):
            labels = [c.label for c in checks]
            if len(set(labels)) != len(labels):
                raise ValueError(f"guardrails.{stage}: check names must be unique")
            if self.moderation is None and any(c.moderation is not None for c in checks):
                raise ValueError(f"guardrails.{stage}: a moderation check needs guardrails.moderation")
        return self


# The bound-Secret key of the tracing exporter's headers (a JSON object of name -> value).
TRACING_HEADERS_FILE = "tracing-headers.json"
TracingProtocol = Literal["http/protobuf"]


class TracingConfig(ConfigModel):
    """OpenTelemetry traces over OTLP (agent_runtime/tracing); off when unset."""

    endpoint: str = Field(
        description="OTLP/HTTP base URL of the collector, e.g. http://otel-collector:4318 "
        "(``/v1/traces`` is added unless the URL has a path)."
    )
    protocol: TracingProtocol = Field(default="http/protobuf", description="OTLP transport.")
    sampling_ratio: float = Field(
        default=1.0, ge=0, le=1, description="Share of new traces recorded; a caller's sampled flag wins."
    )
    headers_file: str | None = Field(
        default=None, description="File holding the exporter's headers (JSON object name -> value)."
    )
    capture_content: bool = Field(
        default=False, description="Record prompts and answers on the spans (gen_ai.*.messages)."
    )
    timeout: Duration = Field(default="5s", description="Deadline of one export to the collector.")
    max_queue_size: int = Field(
        default=2048, ge=64, le=1_000_000, description="Finished spans kept while the collector is slow."
    )


# ----------------------------------------------------------------------------- audit sinks

SyslogFacility = Literal[
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
]  # fmt: skip
AuditSinkFormat = Literal["splunkHec", "jsonLines"]
# RFC 5424 APP-NAME: 1 to 48 printable US-ASCII characters, no space.
SYSLOG_APP_NAME_PATTERN = r"^[!-~]{1,48}$"
SINK_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DEFAULT_AUDIT_SPOOL_DIR = "/var/lib/sentient/audit-spool"
MAX_AUDIT_SINKS = 8
MIB = 1024 * 1024


def audit_sink_token_file(sink: str) -> str:
    """Bound-Secret key of an audit sink's token."""
    return f"audit-sink-{sink}-token"


def audit_sink_ca_file(sink: str) -> str:
    """Bound-Secret key of an audit sink's CA bundle."""
    return f"audit-sink-{sink}-ca.pem"


class AuditSinkTLS(ConfigModel):
    """TLS of a sink's connection."""

    ca_file: str | None = Field(default=None, description="PEM CA bundle file; the system CAs when unset.")
    server_name: str | None = Field(
        default=None, max_length=253, description="Name checked in the certificate; the host when unset."
    )


class SyslogSinkConfig(ConfigModel):
    """RFC 5424 over TCP, octet-counting framing (RFC 6587), TLS when ``tls`` is set (RFC 5425)."""

    address: HostPort = Field(description="host:port of the collector.")
    tls: AuditSinkTLS | None = Field(default=None, description="TLS; plain TCP when unset.")
    facility: SyslogFacility = Field(default="authpriv", description="Syslog facility of the messages.")
    app_name: Annotated[str, StringConstraints(pattern=SYSLOG_APP_NAME_PATTERN)] = Field(
        default="sentient", description="APP-NAME of the messages."
    )
    structured_data: bool = Field(
        default=False, description="Add an SD-ELEMENT with seq, event and worker to every message."
    )
    timeout: Duration = Field(default="5s", description="Connect and write timeout.")


class HTTPSinkConfig(ConfigModel):
    """Batches of records POSTed as Splunk HEC events or JSON lines."""

    url: str = Field(
        description="URL posted to; HEC's /services/collector/event when a splunkHec URL has no path."
    )
    format: AuditSinkFormat = Field(default="splunkHec", description="splunkHec or jsonLines.")
    token_file: str | None = Field(default=None, description="File holding the token.")
    index: str | None = Field(default=None, max_length=256, description="HEC index.")
    source: str | None = Field(default=None, max_length=256, description="HEC source.")
    sourcetype: str = Field(default="sentient:audit", max_length=256, description="HEC sourcetype.")
    timeout: Duration = Field(default="5s", description="Deadline of one POST.")
    tls: AuditSinkTLS | None = Field(default=None, description="TLS settings (https URLs).")


class AuditSinkConfig(ConfigModel):
    """One SIEM sink: exactly one of syslog and http, with its on-disk buffer."""

    name: Annotated[str, StringConstraints(pattern=SINK_NAME_PATTERN, max_length=63)] = Field(
        description="Name in metrics, logs and the spool directory."
    )
    syslog: SyslogSinkConfig | None = None
    http: HTTPSinkConfig | None = None
    max_buffer_bytes: int = Field(
        default=64 * MIB,
        ge=MIB,
        le=64 * 1024 * MIB,
        description="Cap of the spool; newest records dropped beyond.",
    )
    batch_size: int = Field(default=100, ge=1, le=10_000, description="Records per send at most.")

    @model_validator(mode="after")
    def _one_kind(self) -> AuditSinkConfig:
        if (self.syslog is None) == (self.http is None):
            raise ValueError(f"audit sink {self.name}: set exactly one of syslog, http")
        return self


class AuditRuntimeConfig(ConfigModel):
    """Where audit records go besides the local file or stdout."""

    sinks: list[AuditSinkConfig] = Field(default_factory=list, max_length=MAX_AUDIT_SINKS)
    spool_dir: str = Field(default=DEFAULT_AUDIT_SPOOL_DIR, description="Directory of the sinks' spools.")
    fsync_interval: Duration = Field(
        default="1s", description="Longest time an appended record waits for fsync; 0s: at every append."
    )

    @model_validator(mode="after")
    def _unique(self) -> AuditRuntimeConfig:
        names = [sink.name for sink in self.sinks]
        if len(set(names)) != len(names):
            raise ValueError("audit.sinks: sink names must be unique")
        return self


class RuntimeConfig(ConfigModel):
    """Everything the agent runtime needs except secret values."""

    config_version: int = Field(default=CONFIG_VERSION, ge=1, description="Schema version of this file.")
    agent: AgentInfo
    llm: LLMRuntimeConfig
    rate_limit: RateLimitConfig | None = None
    auth: AuthRuntimeConfig = Field(default_factory=AuthRuntimeConfig)
    sessions: SessionsRuntimeConfig = Field(default_factory=SessionsRuntimeConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    audit_key_file: str | None = Field(default=AUDIT_KEY_FILE, description="HMAC key of the audit chain.")
    guardrails: GuardrailsConfig | None = Field(
        default=None, description="Input and output checks; off when unset."
    )
    audit: AuditRuntimeConfig | None = Field(default=None, description="SIEM sinks of the audit log.")
    cache: CacheRuntimeConfig | None = Field(default=None, description="Response cache; off when unset.")
    tracing: TracingConfig | None = Field(default=None, description="OpenTelemetry traces; off when unset.")


def config_path() -> Path:
    """Where the config file is (``SENTIENT_CONFIG`` or the in-pod default)."""
    return Path(os.environ.get("SENTIENT_CONFIG", DEFAULT_CONFIG_PATH))


def credentials_dir() -> Path:
    """Where the bound Secret is mounted (``SENTIENT_CREDENTIALS_DIR`` or the in-pod default)."""
    return Path(os.environ.get("SENTIENT_CREDENTIALS_DIR", DEFAULT_CREDENTIALS_DIR))


def parse_config(text: str) -> RuntimeConfig:
    """Parse and validate the YAML text of a runtime config.

    Fields this runtime does not know are dropped with one warning naming them; a field it knows
    with a wrong value raises ``pydantic.ValidationError``.
    """
    config = RuntimeConfig.model_validate(yaml.safe_load(text))
    unknown = list(config.unknown_fields())
    if config.config_version > CONFIG_VERSION:
        log.warning(
            "runtime config version %d is newer than this runtime's (%d); fields it does not know are ignored",
            config.config_version,
            CONFIG_VERSION,
        )
    if unknown:
        log.warning(
            "runtime config: ignoring fields this runtime does not know: %s",
            ", ".join(unknown),
            extra={"unknown_fields": unknown},
        )
        config.drop_unknown_fields()
    return config


def load_config(path: Path | None = None) -> RuntimeConfig:
    """Read and validate the runtime config file."""
    return parse_config((path or config_path()).read_text())


_SAFE_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dump_config(config: RuntimeConfig) -> str:
    """The YAML text the operator writes into the ConfigMap."""
    # libyaml's emitter when PyYAML has it (its wheels do): the same text, 7x faster than the
    # pure-Python one, which was the largest single cost of an agent's reconcile.
    return yaml.dump(config.to_wire(), Dumper=_SAFE_DUMPER, sort_keys=True)
