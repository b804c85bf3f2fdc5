"""The three custom resources of ``sentient.dev/v1alpha1`` as pydantic v2 models.

This module is the single source of truth for the public API: the CRDs in
``crds/`` are generated from it (``make crds``), the operator validates what it
reads with it, and the agent runtime's configuration reuses its value types
(timeouts, retry, circuit breaker, limits, LLM parameters) so that what a user
writes in a custom resource means the same thing in the running agent.

It imports nothing but pydantic, so the runtime image can use it without the
operator's dependencies.
"""

from __future__ import annotations

import re
from datetime import timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "sentient.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str) -> timedelta:
    """Parse a Go-style duration such as ``"1m30s"`` or ``"250ms"``.

    Raises ``ValueError`` naming the value when it is not a duration.
    """
    if not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(f"invalid duration {value!r}: use e.g. '500ms', '30s', '5m', '1h30m'")
    seconds = sum(float(num) * _UNIT_SECONDS[unit] for num, unit in _DURATION_PART.findall(value))
    return timedelta(seconds=seconds)


def duration_seconds(value: str) -> float:
    """Seconds in a Go-style duration string."""
    return parse_duration(value).total_seconds()


class Model(BaseModel):
    """Base of every API object: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as it appears in YAML/JSON: camelCase, unset defaults left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# --------------------------------------------------------------------------- common


class SecretKeyRef(Model):
    """A key in a Kubernetes Secret."""

    name: str = Field(description="Name of the Secret.", min_length=1, max_length=253)
    key: str = Field(description="Key inside the Secret's data.", min_length=1, max_length=253)
    namespace: str | None = Field(
        default=None,
        description="Namespace of the Secret; defaults to the namespace of the referencing resource.",
    )


class SecretRef(Model):
    """A whole Kubernetes Secret."""

    name: str = Field(description="Name of the Secret.", min_length=1, max_length=253)


class ConfigMapKeyRef(Model):
    """A key in a Kubernetes ConfigMap in the same namespace."""

    name: str = Field(description="Name of the ConfigMap.", min_length=1, max_length=253)
    key: str = Field(description="Key inside the ConfigMap's data.", min_length=1, max_length=253)


class Condition(Model):
    """A Kubernetes-style status condition."""

    type: str = Field(description="Type of the condition, e.g. Ready.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="One-word CamelCase reason for the last transition.")
    message: str = Field(default="", description="Human-readable detail; never contains secret values.")
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation the condition was set for."
    )
    last_transition_time: str = Field(description="When the status last changed (RFC 3339).")


class CommonStatus(Model):
    """Status fields shared by every kind."""

    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation the operator last acted upon."
    )
    conditions: list[Condition] = Field(default_factory=list, description="Current conditions.")


# --------------------------------------------------------------------------- LLMProvider


class ProviderType(StrEnum):
    """Wire protocol of an upstream model API."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    OPENAI_COMPATIBLE = "openai-compatible"


class TLSConfig(Model):
    """TLS settings for talking to the upstream."""

    ca_secret_ref: SecretKeyRef | None = Field(
        default=None, description="PEM CA bundle used to verify the upstream's certificate."
    )
    insecure_skip_verify: bool = Field(
        default=False, description="Skip certificate verification. Only for testing."
    )


class VaultTokenAuth(Model):
    """Authenticate to Vault with a static token read from a Secret."""

    secret_ref: SecretKeyRef = Field(description="Secret key holding the Vault token.")


class VaultKubernetesAuth(Model):
    """Authenticate to Vault with the operator's Kubernetes service-account token."""

    role: str = Field(description="Vault role bound to the operator's service account.", min_length=1)
    mount_path: str = Field(default="kubernetes", description="Mount path of the kubernetes auth method.")
    audience: str | None = Field(
        default=None, description="Audience requested for the service-account token (TokenRequest)."
    )


class VaultAppRoleAuth(Model):
    """Authenticate to Vault with AppRole."""

    role_id: str = Field(description="AppRole role ID.", min_length=1)
    secret_ref: SecretKeyRef = Field(description="Secret key holding the AppRole secret ID.")
    mount_path: str = Field(default="approle", description="Mount path of the AppRole auth method.")


class VaultAuth(Model):
    """Exactly one way to authenticate to Vault."""

    token: VaultTokenAuth | None = Field(default=None, description="Static token from a Secret.")
    kubernetes: VaultKubernetesAuth | None = Field(
        default=None, description="Kubernetes auth with the operator's service account."
    )
    app_role: VaultAppRoleAuth | None = Field(default=None, description="AppRole auth.")


class VaultSource(Model):
    """Read the credential from HashiCorp Vault or OpenBao (KV v1 or v2)."""

    server: str = Field(description="Vault address, e.g. https://vault.vault:8200.")
    path: str = Field(description="Secret path inside the KV mount, e.g. llm/openai.", min_length=1)
    mount: str = Field(default="secret", description="KV secrets engine mount point.")
    kv_version: Literal[1, 2] = Field(default=2, description="KV secrets engine version (1 or 2).")
    namespace: str | None = Field(default=None, description="Vault Enterprise / OpenBao namespace.")
    key: str = Field(default="apiKey", description="Field of the secret that holds the credential.")
    auth: VaultAuth = Field(description="How the operator authenticates to Vault.")
    ca_secret_ref: SecretKeyRef | None = Field(default=None, description="PEM CA bundle for Vault's TLS.")


class AWSAuth(Model):
    """How the operator authenticates to AWS."""

    secret_ref: SecretRef | None = Field(
        default=None,
        description=(
            "Secret with keys accessKeyId and secretAccessKey (and optionally sessionToken); "
            "when unset the ambient credential chain (IRSA, instance profile, env) is used."
        ),
    )


class AWSSecretsManagerSource(Model):
    """Read the credential from AWS Secrets Manager."""

    region: str = Field(description="AWS region, e.g. eu-west-1.", min_length=1)
    secret_id: str = Field(description="Secret name or ARN.", min_length=1)
    key: str | None = Field(
        default=None, description="When the secret string is JSON, the key holding the credential."
    )
    version_stage: str | None = Field(default=None, description="Version stage, e.g. AWSCURRENT.")
    endpoint: str | None = Field(
        default=None, description="Custom endpoint URL (VPC endpoint, or a test server)."
    )
    auth: AWSAuth = Field(default_factory=AWSAuth, description="Credentials for AWS.")


class AzureClientSecretAuth(Model):
    """Service principal with a client secret."""

    tenant_id: str = Field(description="Entra ID tenant.", min_length=1)
    client_id: str = Field(description="Application (client) ID.", min_length=1)
    secret_ref: SecretKeyRef = Field(description="Secret key holding the client secret.")


class AzureWorkloadIdentityAuth(Model):
    """Azure workload identity federation with the operator's service account."""

    tenant_id: str | None = Field(default=None, description="Entra ID tenant; defaults to AZURE_TENANT_ID.")
    client_id: str | None = Field(default=None, description="Client ID; defaults to AZURE_CLIENT_ID.")


class AzureAuth(Model):
    """Exactly one way to authenticate to Azure."""

    client_secret: AzureClientSecretAuth | None = Field(default=None, description="Client secret.")
    workload_identity: AzureWorkloadIdentityAuth | None = Field(default=None, description="Workload identity.")
    default: bool | None = Field(default=None, description="Use DefaultAzureCredential.")


class AzureKeyVaultSource(Model):
    """Read the credential from Azure Key Vault."""

    vault_url: str = Field(
        alias="vaultURL", description="Vault URL, e.g. https://my-vault.vault.azure.net/."
    )
    secret_name: str = Field(description="Name of the Key Vault secret.", min_length=1)
    version: str | None = Field(default=None, description="Pin a secret version; latest when unset.")
    auth: AzureAuth = Field(description="How the operator authenticates to Azure.")


class CredentialsSource(Model):
    """Where the provider's API key comes from: exactly one source."""

    secret_ref: SecretKeyRef | None = Field(
        default=None, description="A key of a Kubernetes Secret in the provider's namespace."
    )
    vault: VaultSource | None = Field(default=None, description="HashiCorp Vault or OpenBao.")
    aws_secrets_manager: AWSSecretsManagerSource | None = Field(
        default=None, description="AWS Secrets Manager."
    )
    azure_key_vault: AzureKeyVaultSource | None = Field(default=None, description="Azure Key Vault.")
    refresh_interval: str = Field(
        default="1m",
        pattern=DURATION_PATTERN,
        description="How often external stores are re-read (Kubernetes Secrets are watched).",
    )


class Timeouts(Model):
    """Timeouts for one upstream call."""

    connect: str = Field(default="5s", pattern=DURATION_PATTERN, description="TCP/TLS connect timeout.")
    first_token: str = Field(
        default="30s", pattern=DURATION_PATTERN, description="Longest wait for the first token."
    )
    idle: str = Field(
        default="30s", pattern=DURATION_PATTERN, description="Longest gap between two streamed chunks."
    )
    total: str = Field(
        default="300s",
        pattern=DURATION_PATTERN,
        description="Deadline of a whole request, shared by all retries and failovers.",
    )


class RetryPolicy(Model):
    """Retries against one provider before failing over to the next."""

    max_attempts: int = Field(default=3, ge=1, le=10, description="Attempts per provider, first included.")
    initial_backoff: str = Field(
        default="200ms", pattern=DURATION_PATTERN, description="Backoff before the first retry."
    )
    max_backoff: str = Field(default="5s", pattern=DURATION_PATTERN, description="Upper bound of the backoff.")
    retry_on: list[Literal["429", "5xx", "connect-error", "timeout", "reset"]] = Field(
        default_factory=lambda: ["429", "5xx", "connect-error", "timeout", "reset"],
        description="Error classes that are retried (and that trigger failover).",
    )


class CircuitBreaker(Model):
    """Circuit breaker per (provider, model)."""

    failure_threshold: int = Field(
        default=5, ge=1, le=1000, description="Failures within the window that open the breaker."
    )
    window: str = Field(default="60s", pattern=DURATION_PATTERN, description="Window failures are counted in.")
    cooldown: str = Field(
        default="30s", pattern=DURATION_PATTERN, description="Time open before trying again (half-open)."
    )
    half_open_requests: int = Field(
        default=1, ge=1, le=100, description="Trial requests allowed while half-open."
    )


class ProviderLimits(Model):
    """Provider-side quota shared by every agent that uses the provider."""

    requests_per_minute: int | None = Field(default=None, ge=1, description="Requests per minute.")
    tokens_per_minute: int | None = Field(default=None, ge=1, description="Tokens (input + output) per minute.")


class LLMProviderSpec(Model):
    """Desired state of an LLMProvider."""

    type: ProviderType = Field(description="Wire protocol: openai, anthropic or openai-compatible.")
    endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/$.?#][^\s]*$",
        description="Base URL of the API; defaults to the vendor's public endpoint. Required for openai-compatible.",
    )
    models: list[str] = Field(default_factory=list, description="Models this provider may serve.")
    default_model: str | None = Field(default=None, description="Model used when a chain entry names none.")
    default_headers: dict[str, str] = Field(
        default_factory=dict, description="Extra HTTP headers sent with every request (no secrets)."
    )
    tls: TLSConfig | None = Field(default=None, description="TLS settings for the upstream.")
    credentials: CredentialsSource | None = Field(
        default=None, description="Where the API key comes from; omit for keyless local servers."
    )
    timeouts: Timeouts = Field(default_factory=Timeouts, description="Upstream timeouts.")
    retry: RetryPolicy = Field(default_factory=RetryPolicy, description="Retry policy.")
    circuit_breaker: CircuitBreaker = Field(default_factory=CircuitBreaker, description="Circuit breaker.")
    limits: ProviderLimits | None = Field(default=None, description="Provider-side quota.")
    allowed_namespaces: list[str] = Field(
        default_factory=list,
        description="Namespaces whose agents may reference this provider; empty means its own only; '*' means all.",
    )


class LLMProviderStatus(CommonStatus):
    """Observed state of an LLMProvider."""

    last_sync_time: str | None = Field(default=None, description="Last successful credential sync (RFC 3339).")
    credentials_fingerprint: str | None = Field(
        default=None, description="Keyed HMAC of the current credential; changes when it rotates."
    )
    credentials_version: str | None = Field(
        default=None, description="Version of the credential in its store, where the store has versions."
    )


# --------------------------------------------------------------------------- RateLimitPolicy


class CountBy(StrEnum):
    """What a budget is counted per."""

    API_KEY = "apiKey"
    USER = "user"
    SESSION = "session"
    AGENT = "agent"


class RateLimits(Model):
    """Request and token budgets."""

    requests_per_minute: int | None = Field(default=None, ge=1, description="Requests per minute.")
    tokens_per_minute: int | None = Field(default=None, ge=1, description="Tokens (input + output) per minute.")
    burst: int | None = Field(
        default=None, ge=1, description="Requests allowed at once above the steady rate; defaults to the rate."
    )
    concurrency: int | None = Field(default=None, ge=1, description="Requests in flight at the same time.")


class Tier(Model):
    """Limits selected by the caller's API-key tier."""

    name: str = Field(description="Tier name, as given to API keys.", min_length=1, max_length=63)
    limits: RateLimits = Field(description="Limits for callers of this tier.")


class RedisBackend(Model):
    """Where Redis is."""

    address_secret_ref: SecretKeyRef = Field(
        description="Secret key holding the Redis URL (redis://[:password@]host:port/db or rediss://)."
    )
    key_prefix: str = Field(default="sentient:rl:", description="Prefix of every key the limiter writes.")


class RateLimitBackend(Model):
    """Where counters live."""

    type: Literal["memory", "redis"] = Field(
        default="memory", description="memory (per replica) or redis (shared by every replica)."
    )
    redis: RedisBackend | None = Field(default=None, description="Redis settings when type is redis.")


class RateLimitPolicySpec(Model):
    """Desired state of a RateLimitPolicy."""

    limits: RateLimits = Field(description="Default limits.")
    count_by: CountBy = Field(default=CountBy.API_KEY, description="What the budget is counted per.")
    tiers: list[Tier] = Field(default_factory=list, description="Named overrides selected by API-key tier.")
    backend: RateLimitBackend = Field(default_factory=RateLimitBackend, description="Counter storage.")
    on_redis_unavailable: Literal["failOpen", "failClosed"] = Field(
        default="failOpen",
        description="failOpen serves with a local limiter; failClosed refuses with 503.",
    )
    allowed_namespaces: list[str] = Field(
        default_factory=list,
        description="Namespaces whose agents may reference this policy; empty means its own only; '*' means all.",
    )


class RateLimitPolicyStatus(CommonStatus):
    """Observed state of a RateLimitPolicy."""

    agents: int | None = Field(default=None, description="Agents that reference this policy.")


# --------------------------------------------------------------------------- SentientAgent


class ProviderRef(Model):
    """Reference to an LLMProvider."""

    name: str = Field(description="Name of the LLMProvider.", min_length=1, max_length=253)
    namespace: str | None = Field(default=None, description="Namespace; defaults to the agent's.")


class ChainEntry(Model):
    """One step of the failover chain."""

    provider_ref: ProviderRef = Field(description="The provider.")
    model: str | None = Field(default=None, description="Model; defaults to the provider's defaultModel.")


class LLMParameters(Model):
    """Sampling parameters."""

    temperature: float | None = Field(default=None, ge=0, le=2, description="Sampling temperature, 0..2.")
    max_tokens: int | None = Field(default=1024, ge=1, le=1_000_000, description="Maximum output tokens.")
    top_p: float | None = Field(default=None, ge=0, le=1, description="Nucleus sampling, 0..1.")


class LLMConfig(Model):
    """Which models the agent uses."""

    chain: list[ChainEntry] = Field(
        min_length=1, max_length=10, description="Ordered failover chain: the first usable entry serves."
    )
    parameters: LLMParameters = Field(default_factory=LLMParameters, description="Sampling parameters.")


class APIKeyAuth(Model):
    """API keys for callers."""

    secret_ref: SecretRef = Field(
        description=(
            "Secret whose keys are key IDs and whose values are the API keys; a key named "
            "'<id>.tier' gives that key's tier."
        )
    )


class JWTAuth(Model):
    """JSON Web Tokens for callers."""

    issuer: str = Field(description="Expected iss claim.", min_length=1)
    audiences: list[str] = Field(min_length=1, description="Accepted aud values.")
    jwks_url: str = Field(alias="jwksURL", pattern=r"^https?://", description="JWKS endpoint.")
    tier_claim: str = Field(default="tier", description="Claim that names the caller's tier.")


class AuthConfig(Model):
    """How callers authenticate."""

    api_keys: APIKeyAuth | None = Field(default=None, description="API keys from a Secret.")
    jwt: JWTAuth | None = Field(default=None, description="JWT bearer tokens.")
    anonymous: bool = Field(default=False, description="Allow unauthenticated callers. Off by default.")


class SessionsConfig(Model):
    """Conversation history."""

    store: Literal["memory", "redis"] = Field(default="memory", description="memory or redis.")
    ttl: str = Field(default="1h", pattern=DURATION_PATTERN, description="Idle time before a session expires.")
    max_turns: int = Field(default=50, ge=1, le=10000, description="Turns of history kept per session.")
    redis_secret_ref: SecretKeyRef | None = Field(default=None, description="Redis URL when store is redis.")


class DeploymentOverrides(Model):
    """Pod-level settings of the agent Deployment."""

    image: str | None = Field(default=None, description="Runtime image; defaults to the operator's setting.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="Image pull policy."
    )
    resources: dict[str, Any] | None = Field(default=None, description="Container resources.")
    env: list[dict[str, Any]] = Field(default_factory=list, description="Extra environment variables.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node selector.")
    tolerations: list[dict[str, Any]] = Field(default_factory=list, description="Tolerations.")
    affinity: dict[str, Any] | None = Field(default=None, description="Affinity.")
    pod_annotations: dict[str, str] = Field(default_factory=dict, description="Extra pod annotations.")
    pod_labels: dict[str, str] = Field(default_factory=dict, description="Extra pod labels.")
    service_account_name: str | None = Field(default=None, description="Service account for the pods.")
    agent_class: str | None = Field(
        default=None, description="Python class of a custom agent (module:Class) inside the image."
    )


class ServiceConfig(Model):
    """The agent's Service."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(default="ClusterIP", description="Type.")
    port: int = Field(default=80, ge=1, le=65535, description="Service port.")


class AutoscalingConfig(Model):
    """HorizontalPodAutoscaler settings."""

    min_replicas: int = Field(default=1, ge=1, description="Lower bound.")
    max_replicas: int = Field(ge=1, description="Upper bound.")
    target_cpu_utilization: int = Field(
        default=80, ge=1, le=100, alias="targetCPUUtilization", description="CPU target in percent."
    )


class ServiceMonitorConfig(Model):
    """Prometheus-operator ServiceMonitor."""

    enabled: bool = Field(default=False, description="Create a ServiceMonitor when its CRD exists.")
    interval: str = Field(default="30s", pattern=DURATION_PATTERN, description="Scrape interval.")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels (for the Prometheus selector).")


class MonitoringConfig(Model):
    """Monitoring integration."""

    service_monitor: ServiceMonitorConfig = Field(default_factory=ServiceMonitorConfig, description="ServiceMonitor.")


class RotationConfig(Model):
    """What happens when a credential changes."""

    strategy: Literal["HotReload", "RollingRestart"] = Field(
        default="HotReload",
        description="HotReload: the runtime re-reads mounted files; RollingRestart: the Deployment rolls.",
    )
    validate_before_rollout: bool = Field(
        default=False, description="Try a new key against the provider before binding it."
    )


class SentientAgentSpec(Model):
    """Desired state of a SentientAgent."""

    description: str = Field(default="", max_length=1024, description="What the agent does (agent card).")
    system_prompt: str | None = Field(default=None, max_length=100_000, description="System prompt.")
    system_prompt_from: ConfigMapKeyRef | None = Field(
        default=None, description="System prompt from a ConfigMap key (instead of systemPrompt)."
    )
    capabilities: list[str] = Field(default_factory=list, description="Capabilities listed in the agent card.")
    llm: LLMConfig = Field(description="Models and failover chain.")
    rate_limit_policy_ref: ProviderRef | None = Field(
        default=None, description="RateLimitPolicy to enforce (name, optional namespace)."
    )
    auth: AuthConfig = Field(default_factory=AuthConfig, description="Caller authentication.")
    sessions: SessionsConfig = Field(default_factory=SessionsConfig, description="Session storage.")
    replicas: int = Field(default=1, ge=0, le=100, description="Number of runtime pods.")
    deployment: DeploymentOverrides = Field(default_factory=DeploymentOverrides, description="Pod settings.")
    service: ServiceConfig = Field(default_factory=ServiceConfig, description="Service settings.")
    autoscaling: AutoscalingConfig | None = Field(default=None, description="Autoscaling; replaces replicas.")
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig, description="Monitoring.")
    rotation: RotationConfig = Field(default_factory=RotationConfig, description="Credential rotation.")


class ChainEntryStatus(Model):
    """Observed state of one chain entry."""

    provider: str = Field(description="namespace/name of the provider.")
    model: str | None = Field(default=None, description="Resolved model.")
    resolved: bool = Field(description="The provider exists and may be used by this agent.")
    ready: bool = Field(description="The provider's credentials are synced.")
    reason: str | None = Field(default=None, description="Why not, when not.")


class SentientAgentStatus(CommonStatus):
    """Observed state of a SentientAgent."""

    replicas: int | None = Field(default=None, description="Pods of the Deployment.")
    ready_replicas: int | None = Field(default=None, description="Ready pods.")
    selector: str | None = Field(default=None, description="Label selector of the pods (scale subresource).")
    endpoint: str | None = Field(default=None, description="In-cluster URL of the agent.")
    providers: list[ChainEntryStatus] = Field(default_factory=list, description="Per chain entry state.")
    config_hash: str | None = Field(default=None, description="Hash of the rendered runtime config.")
