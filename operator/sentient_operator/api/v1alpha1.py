"""The three custom resources of ``sentient.dev/v1alpha1`` as pydantic v2 models.

This module is the single source of truth for the public API: the CRDs in
``crds/`` are generated from it (``make crds``), the operator validates what it
reads with it, and ``build/runtime_config.py`` converts its value types
(timeouts, retry, circuit breaker, limits, LLM parameters) into the agent
runtime's own schema, field for field. Durations are parsed by the runtime's
``parse_duration`` so that a duration means the same thing on both sides.

Why one module of this size: the three kinds share most value types (durations, refs,
conditions, timeouts) and the generator reads one module as the whole public API.

Every cross-field rule exists twice: as a CEL rule (``x-kubernetes-validations``,
declared with :func:`cel`) that the apiserver enforces, and as a pydantic
validator that raises the *same message*, so offline validation
(``sentient validate``) and the apiserver give the same answers. The unit and
e2e tests share one table of invalid resources to keep the two in step.

It imports nothing but pydantic, the standard library and ``agent_runtime.config``
(imports run from the operator to the runtime, never back).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from datetime import timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, NamedTuple, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

from agent_runtime.config import AMOUNT_PATTERN as AMOUNT_PATTERN

# The runtime's durations, re-exported: a duration means the same thing in both schemas.
from agent_runtime.config import BALANCE_STRATEGIES as BALANCE_STRATEGIES
from agent_runtime.config import CURRENCY_PATTERN as CURRENCY_PATTERN
from agent_runtime.config import DURATION_PATTERN as DURATION_PATTERN
from agent_runtime.config import HOST_PORT_PATTERN as HOST_PORT_PATTERN
from agent_runtime.config import MAX_BUSY_POLL_SECONDS as MAX_BUSY_POLL_SECONDS
from agent_runtime.config import MAX_STEP_MEMBERS as MAX_STEP_MEMBERS
from agent_runtime.config import MAX_WORKERS as MAX_WORKERS
from agent_runtime.config import POSTGRES_IDENTIFIER_PATTERN as POSTGRES_IDENTIFIER_PATTERN
from agent_runtime.config import (
    SYSLOG_APP_NAME_PATTERN,
    AuditSinkFormat,
    SyslogFacility,
    audit_sink_ca_file,
    audit_sink_token_file,
    check_patterns,
)
from agent_runtime.config import duration_seconds as duration_seconds
from agent_runtime.config import parse_duration as parse_duration

GROUP = "sentient.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


# Kubernetes name shapes (apimachinery validation: IsDNS1123Subdomain / IsDNS1123Label).
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Keys of Secret and ConfigMap data (IsConfigMapKey).
DATA_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
HTTP_URL_PATTERN = r"^https?://[^\s/$.?#][^\s]*$"
HTTPS_URL_PATTERN = r"^https://[^\s/$.?#][^\s]*$"

# Bounds that keep the apiserver's CEL cost estimate low: every list and string a
# rule iterates over or compares carries a maximum size.
MAX_NAME = 253
MAX_DURATION = 32
MAX_MODEL_NAME = 256
MAX_CHAIN = 10
# A provider's name becomes a label value (sentient.dev/provider=<name>) of its Secret,
# and label values stop at 63 characters.
PROVIDER_NAME_MAX = 63

Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN, max_length=MAX_DURATION)]
Namespace = Annotated[str, StringConstraints(pattern=DNS_LABEL_PATTERN, min_length=1, max_length=63)]
NamespaceOrAll = Annotated[
    str, StringConstraints(pattern=r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$", min_length=1, max_length=63)
]
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_MODEL_NAME)]
HostPort = Annotated[str, StringConstraints(pattern=HOST_PORT_PATTERN, min_length=3, max_length=261)]

# A URL with user:password@ would put a credential where only configuration belongs (the
# rendered ConfigMap, messages, logs); the credential fields take Secret references instead.
# The CEL message names the field and, unlike a pattern's, never echoes the value back.
URL_CREDENTIALS_PATTERN = r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*@"
_URL_CREDENTIALS = re.compile(URL_CREDENTIALS_PATTERN)


def url_credentials_message(path: str) -> str:
    """The message of the rule that keeps credentials out of the URL at ``path``."""
    return f"{path}: must not carry credentials (user:password@); reference a Secret instead"


def no_url_credentials(message: str) -> AfterValidator:
    """Field metadata: refuse a URL with userinfo (mirror of :func:`url_credentials_rule`)."""

    def check(value: str | None) -> str | None:
        if value is not None and _URL_CREDENTIALS.match(value):
            raise ValueError(message)
        return value

    return AfterValidator(check)


def url_credentials_rule(message: str) -> dict[str, Any]:
    """``json_schema_extra`` of a URL field: the CEL twin of :func:`no_url_credentials`."""
    return cel(CelRule(f"!self.matches('{URL_CREDENTIALS_PATTERN}')", message))


def positive_duration_message(path: str) -> str:
    """The message of the rule that keeps the duration at ``path`` above 0s."""
    return f"{path}: must be greater than 0s"


def positive_duration(message: str) -> AfterValidator:
    """Field metadata: a duration above 0s (a 0s timeout fails every call at once)."""

    def check(value: str) -> str:
        if parse_duration(value) <= timedelta(0):
            raise ValueError(message)
        return value

    return AfterValidator(check)


def positive_duration_rule(message: str) -> dict[str, Any]:
    """``json_schema_extra`` of a duration field: the CEL twin of :func:`positive_duration`."""
    return cel(CelRule("duration(self) > duration('0s')", message))


class CelRule(NamedTuple):
    """One ``x-kubernetes-validations`` entry: a CEL expression and the message shown when it is false."""

    rule: str
    message: str


def cel(*rules: CelRule) -> dict[str, Any]:
    """``json_schema_extra`` carrying CEL rules; crdgen copies them into the CRD schema."""
    return {"x-kubernetes-validations": [{"rule": r.rule, "message": r.message} for r in rules]}


def list_type_set() -> dict[str, Any]:
    """``json_schema_extra`` of a list of unique scalars (``x-kubernetes-list-type: set``)."""
    return {"x-kubernetes-list-type": "set"}


def list_type_map(*keys: str) -> dict[str, Any]:
    """``json_schema_extra`` of a list of objects keyed by ``keys`` (``x-kubernetes-list-type: map``)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


def _check_unique(values: Iterable[Any], path: str) -> None:
    """Mirror of the apiserver's duplicate check on ``set`` and ``map`` lists."""
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            # Worded as server-side apply words it (that check runs before schema validation).
            raise ValueError(f"{path}: duplicate entries for key {value!r}")
        seen.add(value)


def _exactly_one(obj: BaseModel, fields: Sequence[str], message: str) -> None:
    """Raise ``message`` unless exactly one of ``fields`` (python names) is set (not None / not False)."""
    count = sum(1 for f in fields if getattr(obj, f) not in (None, False))
    if count != 1:
        raise ValueError(message)


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
    """A key of a Kubernetes Secret in the namespace of the referencing resource.

    Cross-namespace references are deliberately impossible: whoever can create the
    resource could otherwise read any Secret the operator can read.
    """

    name: str = Field(
        description="Name of the Secret, in the namespace of the referencing resource.",
        min_length=1,
        max_length=MAX_NAME,
        pattern=DNS_SUBDOMAIN_PATTERN,
    )
    key: str = Field(
        description="Key inside the Secret's data.",
        min_length=1,
        max_length=MAX_NAME,
        pattern=DATA_KEY_PATTERN,
    )


class SecretRef(Model):
    """A whole Kubernetes Secret in the namespace of the referencing resource."""

    name: str = Field(
        description="Name of the Secret, in the namespace of the referencing resource.",
        min_length=1,
        max_length=MAX_NAME,
        pattern=DNS_SUBDOMAIN_PATTERN,
    )


class LocalObjectReference(Model):
    """A reference to an object by name in the same namespace."""

    name: str = Field(
        description="Name of the object.", min_length=1, max_length=MAX_NAME, pattern=DNS_SUBDOMAIN_PATTERN
    )


class ConfigMapKeyRef(Model):
    """A key in a Kubernetes ConfigMap in the same namespace."""

    name: str = Field(
        description="Name of the ConfigMap, in the agent's namespace.",
        min_length=1,
        max_length=MAX_NAME,
        pattern=DNS_SUBDOMAIN_PATTERN,
    )
    key: str = Field(
        description="Key inside the ConfigMap's data.",
        min_length=1,
        max_length=MAX_NAME,
        pattern=DATA_KEY_PATTERN,
    )


class Condition(Model):
    """A Kubernetes-style status condition (the shape of metav1.Condition)."""

    type: str = Field(
        description="Type of the condition in CamelCase, e.g. Ready, CredentialsSynced, Degraded.",
        min_length=1,
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    )
    status: Literal["True", "False", "Unknown"] = Field(
        description="Status of the condition: True, False or Unknown."
    )
    reason: str = Field(
        description="One-word CamelCase reason for the condition's last transition.",
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
    )
    message: str = Field(
        default="",
        max_length=32768,
        description="Human-readable detail about the transition; never contains secret values.",
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation the condition was set for."
    )
    last_transition_time: str = Field(
        description="When the condition last changed status (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )


class CommonStatus(Model):
    """Status fields shared by every kind."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation the operator last acted upon."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Current conditions of the resource, one per type (Ready, ...).",
        json_schema_extra=list_type_map("type"),
    )
    kopf: dict[str, Any] | None = Field(
        default=None,
        description=(
            "Internal: handler progress kept by the operator framework (kopf); kept in status because "
            "annotations are size-limited. Not for users."
        ),
    )


# --------------------------------------------------------------------------- LLMProvider


class ProviderType(StrEnum):
    """Wire protocol of an upstream model API."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    OPENAI_COMPATIBLE = "openai-compatible"


TLS_BOTH_MESSAGE = "spec.tls: set caSecretRef or insecureSkipVerify, not both"


class TLSConfig(Model):
    """TLS settings for talking to the upstream."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            CelRule(
                "!has(self.caSecretRef) || !has(self.insecureSkipVerify) || !self.insecureSkipVerify",
                TLS_BOTH_MESSAGE,
            )
        )
    )

    ca_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding a PEM CA bundle used to verify the upstream's certificate.",
    )
    insecure_skip_verify: bool = Field(
        default=False, description="Skip certificate verification. Only for testing; never in production."
    )

    @model_validator(mode="after")
    def _one(self) -> TLSConfig:
        # A CA given and verification off: the CA would silently check nothing.
        if self.ca_secret_ref is not None and self.insecure_skip_verify:
            raise ValueError(TLS_BOTH_MESSAGE)
        return self


class VaultTokenAuth(Model):
    """Authenticate to Vault with a static token read from a Secret."""

    secret_ref: SecretKeyRef = Field(description="Secret key holding the Vault token.")


class VaultKubernetesAuth(Model):
    """Authenticate to Vault with the operator's Kubernetes service-account token."""

    role: str = Field(
        description="Vault role bound to the operator's service account.", min_length=1, max_length=MAX_NAME
    )
    mount_path: str = Field(
        default="kubernetes",
        min_length=1,
        max_length=MAX_NAME,
        description="Mount path of the kubernetes auth method.",
    )
    audience: str | None = Field(
        default=None,
        max_length=MAX_NAME,
        description="Audience requested for the service-account token (TokenRequest); Vault's default when unset.",
    )


class VaultAppRoleAuth(Model):
    """Authenticate to Vault with AppRole."""

    role_id: str = Field(description="AppRole role ID.", min_length=1, max_length=MAX_NAME)
    secret_ref: SecretKeyRef = Field(description="Secret key holding the AppRole secret ID.")
    mount_path: str = Field(
        default="approle",
        min_length=1,
        max_length=MAX_NAME,
        description="Mount path of the AppRole auth method.",
    )


VAULT_AUTH_MESSAGE = "spec.credentials.vault.auth: exactly one of token, kubernetes, appRole must be set"
VAULT_SERVER_CREDENTIALS_MESSAGE = url_credentials_message("spec.credentials.vault.server")


class VaultAuth(Model):
    """How the operator authenticates to Vault: exactly one of token, kubernetes, appRole."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            CelRule(
                "(has(self.token) ? 1 : 0) + (has(self.kubernetes) ? 1 : 0) + (has(self.appRole) ? 1 : 0) == 1",
                VAULT_AUTH_MESSAGE,
            )
        )
    )

    token: VaultTokenAuth | None = Field(default=None, description="Static token read from a Secret.")
    kubernetes: VaultKubernetesAuth | None = Field(
        default=None, description="Kubernetes auth with the operator's service-account token."
    )
    app_role: VaultAppRoleAuth | None = Field(default=None, description="AppRole auth (role ID + secret ID).")

    @model_validator(mode="after")
    def _one_method(self) -> VaultAuth:
        _exactly_one(self, ["token", "kubernetes", "app_role"], VAULT_AUTH_MESSAGE)
        return self


class VaultSource(Model):
    """Read the credential from HashiCorp Vault or OpenBao (KV secrets engine v1 or v2)."""

    server: Annotated[str, no_url_credentials(VAULT_SERVER_CREDENTIALS_MESSAGE)] = Field(
        description="Vault address, e.g. https://vault.vault.svc:8200.",
        max_length=2048,
        pattern=HTTP_URL_PATTERN,
        json_schema_extra=url_credentials_rule(VAULT_SERVER_CREDENTIALS_MESSAGE),
    )
    path: str = Field(
        description="Secret path inside the KV mount, without the mount, e.g. llm/openai.",
        min_length=1,
        max_length=1024,
        pattern=r"^[^/\s].*$",
    )
    mount: str = Field(
        default="secret", min_length=1, max_length=MAX_NAME, description="KV secrets engine mount."
    )
    kv_version: Literal[1, 2] = Field(default=2, description="KV secrets engine version: 1 or 2.")
    namespace: str | None = Field(
        default=None, min_length=1, max_length=MAX_NAME, description="Vault Enterprise / OpenBao namespace."
    )
    key: str = Field(
        default="apiKey",
        min_length=1,
        max_length=MAX_NAME,
        description="Field of the Vault secret that holds the credential.",
    )
    auth: VaultAuth = Field(description="How the operator authenticates to Vault: exactly one method.")
    ca_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding a PEM CA bundle for Vault's TLS certificate."
    )


class AWSAuth(Model):
    """How the operator authenticates to AWS: static keys from a Secret, or the ambient chain."""

    secret_ref: SecretRef | None = Field(
        default=None,
        description=(
            "Secret with keys accessKeyId and secretAccessKey (and optionally sessionToken); "
            "when unset the ambient credential chain (IRSA / pod identity, instance profile, env) is used."
        ),
    )


AWS_ENDPOINT_CREDENTIALS_MESSAGE = url_credentials_message("spec.credentials.awsSecretsManager.endpoint")


class AWSSecretsManagerSource(Model):
    """Read the credential from AWS Secrets Manager."""

    region: str = Field(
        description="AWS region, e.g. eu-west-1.",
        min_length=1,
        max_length=64,
        pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]+$",
    )
    secret_id: str = Field(description="Secret name or ARN.", min_length=1, max_length=2048)
    key: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_NAME,
        description="When the secret string is JSON, the key holding the credential; the whole string when unset.",
    )
    version_stage: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Version stage to read, e.g. AWSCURRENT (the default) or AWSPENDING.",
    )
    endpoint: Annotated[str | None, no_url_credentials(AWS_ENDPOINT_CREDENTIALS_MESSAGE)] = Field(
        default=None,
        max_length=2048,
        pattern=HTTP_URL_PATTERN,
        description="Custom endpoint URL (a VPC endpoint, or a test server).",
        json_schema_extra=url_credentials_rule(AWS_ENDPOINT_CREDENTIALS_MESSAGE),
    )
    auth: AWSAuth = Field(default_factory=AWSAuth, description="Credentials for AWS; ambient when unset.")


class AzureClientSecretAuth(Model):
    """Service principal with a client secret."""

    tenant_id: str = Field(description="Entra ID tenant ID.", min_length=1, max_length=MAX_NAME)
    client_id: str = Field(description="Application (client) ID.", min_length=1, max_length=MAX_NAME)
    secret_ref: SecretKeyRef = Field(description="Secret key holding the client secret.")


class AzureWorkloadIdentityAuth(Model):
    """Azure workload identity federation with the operator's service account."""

    tenant_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_NAME,
        description="Entra ID tenant; defaults to AZURE_TENANT_ID.",
    )
    client_id: str | None = Field(
        default=None, min_length=1, max_length=MAX_NAME, description="Client ID; defaults to AZURE_CLIENT_ID."
    )


AZURE_AUTH_MESSAGE = (
    "spec.credentials.azureKeyVault.auth: exactly one of clientSecret, workloadIdentity, default must be set"
)


class AzureAuth(Model):
    """How the operator authenticates to Azure: exactly one of clientSecret, workloadIdentity, default."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            CelRule(
                "(has(self.clientSecret) ? 1 : 0) + (has(self.workloadIdentity) ? 1 : 0)"
                " + ((has(self.default) && self.default) ? 1 : 0) == 1",
                AZURE_AUTH_MESSAGE,
            )
        )
    )

    client_secret: AzureClientSecretAuth | None = Field(
        default=None, description="Service principal with a client secret from a Secret."
    )
    workload_identity: AzureWorkloadIdentityAuth | None = Field(
        default=None, description="Workload identity federation with the operator's service account."
    )
    default: bool | None = Field(
        default=None, description="true: use DefaultAzureCredential (environment, managed identity, ...)."
    )

    @model_validator(mode="after")
    def _one_method(self) -> AzureAuth:
        _exactly_one(self, ["client_secret", "workload_identity", "default"], AZURE_AUTH_MESSAGE)
        return self


class AzureKeyVaultSource(Model):
    """Read the credential from Azure Key Vault."""

    vault_url: str = Field(
        alias="vaultURL",
        max_length=2048,
        pattern=HTTPS_URL_PATTERN,
        description="Vault URL, e.g. https://my-vault.vault.azure.net/.",
    )
    secret_name: str = Field(
        description="Name of the Key Vault secret.", min_length=1, max_length=127, pattern=r"^[0-9a-zA-Z-]+$"
    )
    version: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Pin a secret version; the latest version when unset.",
    )
    auth: AzureAuth = Field(description="How the operator authenticates to Azure: exactly one method.")


# 0s would poll the external store in a hot loop (and get throttled).
REFRESH_MESSAGE = "spec.credentials.refreshInterval: must be at least 1s"
CREDENTIALS_MESSAGE = (
    "spec.credentials: exactly one of secretRef, vault, awsSecretsManager, azureKeyVault must be set"
)


class CredentialsSource(Model):
    """Where the provider's API key comes from: exactly one source, plus how often it is re-read."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            CelRule(
                "(has(self.secretRef) ? 1 : 0) + (has(self.vault) ? 1 : 0)"
                " + (has(self.awsSecretsManager) ? 1 : 0) + (has(self.azureKeyVault) ? 1 : 0) == 1",
                CREDENTIALS_MESSAGE,
            ),
            CelRule("duration(self.refreshInterval) >= duration('1s')", REFRESH_MESSAGE),
        )
    )

    secret_ref: SecretKeyRef | None = Field(
        default=None, description="A key of a Kubernetes Secret in the provider's namespace (watched)."
    )
    vault: VaultSource | None = Field(default=None, description="HashiCorp Vault or OpenBao KV secret.")
    aws_secrets_manager: AWSSecretsManagerSource | None = Field(
        default=None, description="AWS Secrets Manager secret."
    )
    azure_key_vault: AzureKeyVaultSource | None = Field(default=None, description="Azure Key Vault secret.")
    refresh_interval: Duration = Field(
        default="1m",
        description=(
            "How often external stores (Vault, AWS, Azure) are re-read; Kubernetes Secrets are watched "
            "and picked up at once. A Go duration, e.g. 30s, 5m, 1h."
        ),
    )

    @model_validator(mode="after")
    def _one_source(self) -> CredentialsSource:
        _exactly_one(
            self, ["secret_ref", "vault", "aws_secrets_manager", "azure_key_vault"], CREDENTIALS_MESSAGE
        )
        if parse_duration(self.refresh_interval) < timedelta(seconds=1):
            raise ValueError(REFRESH_MESSAGE)
        return self


TIMEOUTS_MESSAGE = "spec.timeouts: connect and firstToken must not exceed total"
TIMEOUTS_POSITIVE_MESSAGE = "spec.timeouts: connect, firstToken and idle must be greater than 0s"


class Timeouts(Model):
    """Timeouts for one upstream call (Go durations, e.g. 500ms, 30s, 5m)."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            CelRule(
                "duration(self.connect) <= duration(self.total) && duration(self.firstToken) <= duration(self.total)",
                TIMEOUTS_MESSAGE,
            ),
            CelRule(
                "duration(self.connect) > duration('0s') && duration(self.firstToken) > duration('0s')"
                " && duration(self.idle) > duration('0s')",
                TIMEOUTS_POSITIVE_MESSAGE,
            ),
        )
    )

    connect: Duration = Field(default="5s", description="TCP and TLS connect timeout.")
    first_token: Duration = Field(
        default="30s", description="Longest wait from sending the request to the first streamed token."
    )
    idle: Duration = Field(default="30s", description="Longest gap between two streamed chunks.")
    total: Duration = Field(
        default="300s",
        description="Deadline of a whole request, shared by all retries and failovers.",
    )

    @model_validator(mode="after")
    def _order(self) -> Timeouts:
        total = parse_duration(self.total)
        if parse_duration(self.connect) > total or parse_duration(self.first_token) > total:
            raise ValueError(TIMEOUTS_MESSAGE)
        if min(parse_duration(d) for d in (self.connect, self.first_token, self.idle)) <= timedelta(0):
            raise ValueError(TIMEOUTS_POSITIVE_MESSAGE)
        return self


RetryClass = Literal["429", "5xx", "connect-error", "timeout", "reset"]


def _all_retry_classes() -> list[RetryClass]:
    return ["429", "5xx", "connect-error", "timeout", "reset"]


RETRY_MESSAGE = "spec.retry: initialBackoff must not exceed maxBackoff"


class RetryPolicy(Model):
    """Retries against one provider before failing over to the next chain entry."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            CelRule("duration(self.initialBackoff) <= duration(self.maxBackoff)", RETRY_MESSAGE)
        )
    )

    max_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Attempts per provider, the first one included (1 disables retries).",
    )
    initial_backoff: Duration = Field(
        default="200ms", description="Backoff before the first retry; doubles per retry, with full jitter."
    )
    max_backoff: Duration = Field(default="5s", description="Upper bound of the backoff.")
    retry_on: list[RetryClass] = Field(
        default_factory=_all_retry_classes,
        max_length=5,
        description=(
            "Error classes that are retried and that trigger failover: 429 (rate limited), 5xx, "
            "connect-error, timeout, reset (connection reset, also mid-stream)."
        ),
        json_schema_extra=list_type_set(),
    )

    @model_validator(mode="after")
    def _order(self) -> RetryPolicy:
        if parse_duration(self.initial_backoff) > parse_duration(self.max_backoff):
            raise ValueError(RETRY_MESSAGE)
        _check_unique(self.retry_on, "spec.retry.retryOn")
        return self


BREAKER_POSITIVE_MESSAGE = "spec.circuitBreaker: window and cooldown must be greater than 0s"


class CircuitBreaker(Model):
    """Circuit breaker per (provider, model): closed, open after failures, half-open after a cooldown."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            CelRule(
                "duration(self.window) > duration('0s') && duration(self.cooldown) > duration('0s')",
                BREAKER_POSITIVE_MESSAGE,
            )
        )
    )

    failure_threshold: int = Field(
        default=5, ge=1, le=1000, description="Failures within the window that open the breaker."
    )
    window: Duration = Field(default="60s", description="Sliding window failures are counted in.")
    cooldown: Duration = Field(
        default="30s", description="Time the breaker stays open before going half-open."
    )
    half_open_requests: int = Field(
        default=1,
        ge=1,
        le=100,
        description="Trial requests allowed while half-open; success closes the breaker.",
    )

    @model_validator(mode="after")
    def _positive(self) -> CircuitBreaker:
        # A 0s window counts no failure; a 0s cooldown re-probes a failing upstream at once.
        if min(parse_duration(self.window), parse_duration(self.cooldown)) <= timedelta(0):
            raise ValueError(BREAKER_POSITIVE_MESSAGE)
        return self


class ProviderLimits(Model):
    """Provider-side quota, shared by every agent (and every replica) that uses the provider."""

    requests_per_minute: int | None = Field(
        default=None, ge=1, le=100_000_000, description="Requests per minute; unlimited when unset."
    )
    tokens_per_minute: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000_000,
        description="Tokens (input + output) per minute; unlimited when unset.",
    )


# Money: decimal strings (exact; the runtime reads them into integer micro-units), ISO 4217 codes.
Amount = Annotated[str, StringConstraints(pattern=AMOUNT_PATTERN, max_length=17)]
Currency = Annotated[str, StringConstraints(pattern=CURRENCY_PATTERN, min_length=3, max_length=3)]


class TokenPrice(Model):
    """Price of a model per million input and per million output tokens."""

    input_per_million: Amount = Field(
        description="Price of one million input (prompt) tokens, a decimal string such as '2.50' (at most 6 decimals)."
    )
    output_per_million: Amount = Field(
        description="Price of one million output (completion) tokens, a decimal string such as '10.00'."
    )


class ModelPrice(TokenPrice):
    """Price of one named model."""

    model: ModelName = Field(description="Model name, as a chain entry or spec.defaultModel names it.")


PRICING_EMPTY_MESSAGE = "spec.pricing: set models, default or both"


class ProviderPricing(Model):
    """What this provider's models cost, for spend budgets (RateLimitPolicy spec.budgets)."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            CelRule("(has(self.models) && size(self.models) > 0) || has(self.default)", PRICING_EMPTY_MESSAGE)
        )
    )

    currency: Currency = Field(
        default="USD", description="ISO 4217 code of every price here, e.g. USD or EUR."
    )
    models: list[ModelPrice] = Field(
        default_factory=list,
        max_length=256,
        description="Prices per model; names are unique.",
        json_schema_extra=list_type_map("model"),
    )
    default: TokenPrice | None = Field(
        default=None,
        description="Price of every model not listed in models; unlisted models are free without it.",
    )

    @model_validator(mode="after")
    def _rules(self) -> ProviderPricing:
        if not self.models and self.default is None:
            raise ValueError(PRICING_EMPTY_MESSAGE)
        _check_unique((m.model for m in self.models), "spec.pricing.models")
        return self

    def price_of(self, model: str) -> TokenPrice | None:
        """The price of ``model``: its own entry, else the default."""
        return next((m for m in self.models if m.model == model), self.default)


ENDPOINT_MESSAGE = "spec.endpoint: required when spec.type is openai-compatible"
PRICING_MODELS_MESSAGE = "spec.pricing.models: every model must be one of spec.models when spec.models is set"
PROVIDER_CREDENTIALS_MESSAGE = "spec.credentials: required when spec.type is openai or anthropic"
DEFAULT_MODEL_MESSAGE = "spec.defaultModel: must be one of spec.models when spec.models is set"
ENDPOINT_CREDENTIALS_MESSAGE = url_credentials_message("spec.endpoint")
HEADERS_MESSAGE = (
    "spec.defaultHeaders: credential headers (authorization, x-api-key, api-key) are not allowed; "
    "use spec.credentials"
)
_CREDENTIAL_HEADERS = (
    "authorization",
    "x-api-key",
    "api-key",
    "proxy-authorization",
    "x-goog-api-key",
    "ocp-apim-subscription-key",
    "x-auth-token",
    "cookie",
)
HEADER_SYNTAX_MESSAGE = (
    "spec.defaultHeaders: header names must be HTTP tokens (letters, digits and !#$%&'*+-.^_`|~) "
    "and values must not contain control characters such as CR, LF or NUL"
)
# RFC 9110 token for names; values may hold tabs but no other control character (a CR/LF would
# split the request on the wire).
_HEADER_NAME = re.compile(r"^[-!#$%&'*+.^_`|~0-9A-Za-z]+$")
_HEADER_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class LLMProviderSpec(Model):
    """Desired state of an LLMProvider: one upstream model API, its credentials and resilience settings."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            CelRule("self.type != 'openai-compatible' || has(self.endpoint)", ENDPOINT_MESSAGE),
            CelRule(
                "self.type == 'openai-compatible' || has(self.credentials)", PROVIDER_CREDENTIALS_MESSAGE
            ),
            CelRule(
                "!has(self.defaultModel) || !has(self.models) || size(self.models) == 0"
                " || self.defaultModel in self.models",
                DEFAULT_MODEL_MESSAGE,
            ),
            CelRule(
                "!has(self.pricing) || !has(self.pricing.models) || !has(self.models) || size(self.models) == 0"
                " || self.pricing.models.all(p, p.model in self.models)",
                PRICING_MODELS_MESSAGE,
            ),
        )
    )

    type: ProviderType = Field(
        description="Wire protocol of the upstream: openai, anthropic or openai-compatible (vLLM, Ollama, ...)."
    )
    endpoint: Annotated[str | None, no_url_credentials(ENDPOINT_CREDENTIALS_MESSAGE)] = Field(
        default=None,
        max_length=2048,
        pattern=HTTP_URL_PATTERN,
        description=(
            "Base URL of the API, e.g. https://api.openai.com/v1; defaults to the vendor's public "
            "endpoint. Required for openai-compatible."
        ),
        json_schema_extra=url_credentials_rule(ENDPOINT_CREDENTIALS_MESSAGE),
    )
    models: list[ModelName] = Field(
        default_factory=list,
        max_length=256,
        description="Models this provider may serve; any model when empty.",
        json_schema_extra=list_type_set(),
    )
    default_model: ModelName | None = Field(
        default=None,
        description="Model used when a chain entry names none; must be in models when models is set.",
    )
    default_headers: dict[str, Annotated[str, StringConstraints(max_length=4096)]] = Field(
        default_factory=dict,
        max_length=32,
        description="Extra HTTP headers sent with every request, e.g. anthropic-version. Never credentials.",
        json_schema_extra=cel(
            CelRule(
                f"self.all(k, !(k.lowerAscii() in {list(_CREDENTIAL_HEADERS)!r}))",
                HEADERS_MESSAGE,
            ),
            CelRule(
                r"""self.all(k, k.matches("^[-!#$%&'*+.^_`|~0-9A-Za-z]+$") && !self[k].matches("[\\x00-\\x08\\x0a-\\x1f\\x7f]"))""",
                HEADER_SYNTAX_MESSAGE,
            ),
        ),
    )
    tls: TLSConfig | None = Field(default=None, description="TLS settings for the upstream.")
    credentials: CredentialsSource | None = Field(
        default=None,
        description=(
            "Where the API key comes from: exactly one of secretRef, vault, awsSecretsManager, "
            "azureKeyVault. Required for openai and anthropic; omit for keyless local servers."
        ),
    )
    timeouts: Timeouts = Field(default_factory=Timeouts, description="Upstream timeouts.")
    retry: RetryPolicy = Field(default_factory=RetryPolicy, description="Retry policy per provider.")
    circuit_breaker: CircuitBreaker = Field(
        default_factory=CircuitBreaker, description="Circuit breaker per (provider, model)."
    )
    limits: ProviderLimits | None = Field(
        default=None, description="Provider-side quota shared by all agents."
    )
    pricing: ProviderPricing | None = Field(
        default=None,
        description="Prices per model (per million input and output tokens), counted by spend budgets.",
    )
    allowed_namespaces: list[NamespaceOrAll] = Field(
        default_factory=list,
        max_length=256,
        description="Namespaces whose agents may reference this provider; empty means its own only; '*' means all.",
        json_schema_extra=list_type_set(),
    )

    @model_validator(mode="after")
    def _rules(self) -> LLMProviderSpec:
        if self.type == ProviderType.OPENAI_COMPATIBLE and self.endpoint is None:
            raise ValueError(ENDPOINT_MESSAGE)
        if self.type != ProviderType.OPENAI_COMPATIBLE and self.credentials is None:
            raise ValueError(PROVIDER_CREDENTIALS_MESSAGE)
        if self.default_model is not None and self.models and self.default_model not in self.models:
            raise ValueError(DEFAULT_MODEL_MESSAGE)
        if (
            self.pricing is not None
            and self.models
            and any(m.model not in self.models for m in self.pricing.models)
        ):
            raise ValueError(PRICING_MODELS_MESSAGE)
        if any(k.lower() in _CREDENTIAL_HEADERS for k in self.default_headers):
            raise ValueError(HEADERS_MESSAGE)
        if any(
            not _HEADER_NAME.match(k) or _HEADER_VALUE_BAD.search(v) for k, v in self.default_headers.items()
        ):
            raise ValueError(HEADER_SYNTAX_MESSAGE)
        _check_unique(self.models, "spec.models")
        _check_unique(self.allowed_namespaces, "spec.allowedNamespaces")
        return self


class LLMProviderStatus(CommonStatus):
    """Observed state of an LLMProvider."""

    last_sync_time: str | None = Field(
        default=None,
        description="Last successful credential sync (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    credentials_fingerprint: str | None = Field(
        default=None,
        description="Keyed HMAC-SHA256 of the current credential (never a plain hash); changes when it rotates.",
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

    requests_per_minute: int | None = Field(
        default=None, ge=1, le=100_000_000, description="Requests per minute; unlimited when unset."
    )
    tokens_per_minute: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000_000,
        description="Tokens (input + output) per minute, reserved before the call and settled after it.",
    )
    burst: int | None = Field(
        default=None,
        ge=1,
        le=100_000_000,
        description="Requests allowed at once above the steady rate (bucket size); defaults to requestsPerMinute.",
    )
    concurrency: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="Requests in flight at the same time; unlimited when unset.",
    )

    def is_empty(self) -> bool:
        """No budget set at all."""
        return (
            self.requests_per_minute is None and self.tokens_per_minute is None and self.concurrency is None
        )


class Tier(Model):
    """Limits selected by the caller's tier (from its API key or JWT claim)."""

    name: str = Field(
        description="Tier name, as given to API keys ('<keyId>.tier' in the key Secret) or JWT tier claims.",
        min_length=1,
        max_length=63,
        pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
    )
    limits: RateLimits = Field(
        description="Limits for callers of this tier; a field left unset falls back to spec.limits."
    )


class RedisMode(StrEnum):
    """How Redis is deployed."""

    STANDALONE = "standalone"
    CLUSTER = "cluster"
    SENTINEL = "sentinel"


class RedisTLS(Model):
    """TLS towards Redis in cluster and sentinel mode (its presence turns TLS on)."""

    ca_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding a PEM CA bundle for the servers' certificates; the system trust store when unset.",
    )
    insecure_skip_verify: bool = Field(
        default=False, description="Skip certificate verification. Only for testing; never in production."
    )


class RedisClusterNodes(Model):
    """Seed nodes of a Redis Cluster: any few of its nodes; the rest is discovered."""

    nodes: list[HostPort] = Field(
        min_length=1,
        max_length=64,
        description="host:port of seed nodes (a headless Service name works: every address it resolves to is tried).",
        json_schema_extra=list_type_set(),
    )

    @model_validator(mode="after")
    def _unique(self) -> RedisClusterNodes:
        _check_unique(self.nodes, "cluster.nodes")
        return self


class RedisSentinel(Model):
    """The Sentinels that watch the master and the name they know it by."""

    addresses: list[HostPort] = Field(
        min_length=1,
        max_length=64,
        description="host:port of the Sentinels.",
        json_schema_extra=list_type_set(),
    )
    master_name: str = Field(
        min_length=1,
        max_length=MAX_NAME,
        description="Name of the monitored master (sentinel monitor <name> ...).",
    )
    password_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding the Sentinels' own password, when they require one."
    )

    @model_validator(mode="after")
    def _unique(self) -> RedisSentinel:
        _check_unique(self.addresses, "sentinel.addresses")
        return self


class RedisMessages(NamedTuple):
    """The messages of the cross-field rules of one ``redis`` object, naming its path."""

    standalone: str
    cluster: str
    sentinel: str
    address: str
    standalone_extra: str
    mode_fields: str
    tls_both: str


def redis_messages(path: str) -> RedisMessages:
    """Messages of the ``redis`` object at ``path`` (the same rules, at two places of the API)."""
    return RedisMessages(
        standalone=f"{path}.addressSecretRef: required in standalone mode (the whole URL: password, rediss:// for TLS)",
        cluster=f"{path}.cluster: required when mode is cluster",
        sentinel=f"{path}.sentinel: required when mode is sentinel",
        address=f"{path}.addressSecretRef: only in standalone mode (cluster and sentinel take passwordSecretRef and tls)",
        standalone_extra=f"{path}: username, passwordSecretRef and tls are not for standalone mode (put them in the URL)",
        mode_fields=f"{path}: cluster and sentinel are each only for their own mode",
        tls_both=f"{path}.tls: set caSecretRef or insecureSkipVerify, not both",
    )


def redis_rules(messages: RedisMessages) -> dict[str, Any]:
    """The CEL rules of a ``redis`` object, worded with ``messages``."""
    return cel(
        CelRule("self.mode != 'standalone' || has(self.addressSecretRef)", messages.standalone),
        CelRule("self.mode != 'cluster' || has(self.cluster)", messages.cluster),
        CelRule("self.mode != 'sentinel' || has(self.sentinel)", messages.sentinel),
        CelRule("self.mode == 'standalone' || !has(self.addressSecretRef)", messages.address),
        CelRule(
            "self.mode != 'standalone' || (!has(self.username) && !has(self.passwordSecretRef) && !has(self.tls))",
            messages.standalone_extra,
        ),
        CelRule(
            "(!has(self.cluster) || self.mode == 'cluster') && (!has(self.sentinel) || self.mode == 'sentinel')",
            messages.mode_fields,
        ),
        CelRule(
            "!has(self.tls) || !has(self.tls.caSecretRef) || !has(self.tls.insecureSkipVerify)"
            " || !self.tls.insecureSkipVerify",
            messages.tls_both,
        ),
    )


POLICY_REDIS_MESSAGES = redis_messages("spec.backend.redis")
SESSIONS_REDIS_MESSAGES = redis_messages("spec.sessions.redis")


class RedisConnection(Model):
    """Where Redis is and how to log in: one server, a Redis Cluster, or a master behind Sentinels."""

    # Where the object sits in the API, for the messages of its rules (each subclass says).
    MESSAGES: ClassVar[RedisMessages] = SESSIONS_REDIS_MESSAGES
    model_config = ConfigDict(json_schema_extra=redis_rules(SESSIONS_REDIS_MESSAGES))

    mode: RedisMode = Field(
        default=RedisMode.STANDALONE,
        description=(
            "standalone (one server), cluster (Redis Cluster: keys are hash-tagged so that each atomic "
            "update stays on one slot) or sentinel (a master found through Sentinels and followed across failovers)."
        ),
    )
    address_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="standalone: Secret key holding the Redis URL (redis://[:password@]host:port/db or rediss://...).",
    )
    cluster: RedisClusterNodes | None = Field(default=None, description="cluster: the seed nodes.")
    sentinel: RedisSentinel | None = Field(
        default=None, description="sentinel: the Sentinels and the master's name."
    )
    username: str | None = Field(
        default=None, min_length=1, max_length=MAX_NAME, description="cluster, sentinel: ACL user name."
    )
    password_secret_ref: SecretKeyRef | None = Field(
        default=None, description="cluster, sentinel: Secret key holding the password of the Redis nodes."
    )
    tls: RedisTLS | None = Field(default=None, description="cluster, sentinel: connect with TLS.")

    @model_validator(mode="after")
    def _fields_of_mode(self) -> RedisConnection:
        messages = self.MESSAGES
        if self.mode == RedisMode.STANDALONE and self.address_secret_ref is None:
            raise ValueError(messages.standalone)
        if self.mode == RedisMode.CLUSTER and self.cluster is None:
            raise ValueError(messages.cluster)
        if self.mode == RedisMode.SENTINEL and self.sentinel is None:
            raise ValueError(messages.sentinel)
        if self.mode != RedisMode.STANDALONE and self.address_secret_ref is not None:
            raise ValueError(messages.address)
        if self.mode == RedisMode.STANDALONE and (
            self.username is not None or self.password_secret_ref is not None or self.tls is not None
        ):
            raise ValueError(messages.standalone_extra)
        if (self.cluster is not None and self.mode != RedisMode.CLUSTER) or (
            self.sentinel is not None and self.mode != RedisMode.SENTINEL
        ):
            raise ValueError(messages.mode_fields)
        if self.tls is not None and self.tls.ca_secret_ref is not None and self.tls.insecure_skip_verify:
            raise ValueError(messages.tls_both)
        return self

    def secret_refs(self) -> list[SecretKeyRef]:
        """Every Secret key this connection reads (URL, passwords, CA)."""
        refs = [self.address_secret_ref, self.password_secret_ref]
        if self.sentinel is not None:
            refs.append(self.sentinel.password_secret_ref)
        if self.tls is not None:
            refs.append(self.tls.ca_secret_ref)
        return [ref for ref in refs if ref is not None]


def redis_secret_names(raw: dict[str, Any] | None) -> set[str]:
    """Names of the Secrets a raw (unvalidated) ``redis`` object refers to, for watches."""
    raw = raw or {}
    refs = [
        raw.get("addressSecretRef"),
        raw.get("passwordSecretRef"),
        (raw.get("sentinel") or {}).get("passwordSecretRef"),
        (raw.get("tls") or {}).get("caSecretRef"),
    ]
    return {str(ref["name"]) for ref in refs if isinstance(ref, dict) and ref.get("name")}


class RedisBackend(RedisConnection):
    """Where Redis is, and the prefix of the limiter's keys."""

    MESSAGES: ClassVar[RedisMessages] = POLICY_REDIS_MESSAGES
    model_config = ConfigDict(json_schema_extra=redis_rules(POLICY_REDIS_MESSAGES))

    key_prefix: str = Field(
        default="sentient:rl:",
        max_length=MAX_NAME,
        pattern=r"^[^{}]*$",
        description="Prefix of every key the limiter writes (no braces: the keys' Redis Cluster hash tags follow it).",
    )


BACKEND_REDIS_MESSAGE = "spec.backend.redis: required when spec.backend.type is redis"
BACKEND_MEMORY_MESSAGE = "spec.backend.redis: must not be set when spec.backend.type is memory"


class RateLimitBackend(Model):
    """Where counters live."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            CelRule("self.type != 'redis' || has(self.redis)", BACKEND_REDIS_MESSAGE),
            CelRule("self.type != 'memory' || !has(self.redis)", BACKEND_MEMORY_MESSAGE),
        )
    )

    type: Literal["memory", "redis"] = Field(
        default="memory",
        description="memory (per replica: the real limit is limit x replicas) or redis (shared by every replica).",
    )
    redis: RedisBackend | None = Field(
        default=None, description="Redis settings; required when type is redis."
    )

    @model_validator(mode="after")
    def _redis(self) -> RateLimitBackend:
        if self.type == "redis" and self.redis is None:
            raise ValueError(BACKEND_REDIS_MESSAGE)
        if self.type == "memory" and self.redis is not None:
            raise ValueError(BACKEND_MEMORY_MESSAGE)
        return self


POLICY_LIMITS_MESSAGE = (
    "spec.limits: set at least one of requestsPerMinute, tokensPerMinute, concurrency (or spec.budgets)"
)
BUDGET_WINDOW_MESSAGE = "spec.budgets[]: set perDay, perMonth or both"
# burst sizes the requests bucket: without a per-minute request rate the runtime ignores it.
BURST_MESSAGE = (
    "spec.limits.burst: needs requestsPerMinute (in the same limits, or in spec.limits for a tier)"
)
BUDGET_ORDER_MESSAGE = "spec.budgets[].perDay: must not exceed perMonth"
BUDGET_TIERS_MESSAGE = "spec.budgets[].tiers: not allowed with per: agent (one budget for all callers)"


class BudgetPer(StrEnum):
    """Whom one spend budget counts: each API key, each user, each tier, or the whole agent."""

    API_KEY = "apiKey"
    USER = "user"
    TIER = "tier"
    AGENT = "agent"


class SpendBudget(Model):
    """A spend limit per UTC calendar day and/or month, counted per API key, user, tier or agent."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            CelRule("has(self.perDay) || has(self.perMonth)", BUDGET_WINDOW_MESSAGE),
            CelRule(
                "!has(self.perDay) || !has(self.perMonth) || double(self.perDay) <= double(self.perMonth)",
                BUDGET_ORDER_MESSAGE,
            ),
            CelRule("self.per != 'agent' || !has(self.tiers) || size(self.tiers) == 0", BUDGET_TIERS_MESSAGE),
        )
    )

    name: str = Field(
        description="Name of the budget, shown in errors, metrics and sentient status; unique in the policy.",
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
    )
    per: BudgetPer = Field(
        default=BudgetPer.AGENT,
        description=(
            "Whom it counts: apiKey (each key its own budget), user (each JWT subject; API-key callers as "
            "their key), tier (each tier one budget shared by its callers) or agent (one budget for all)."
        ),
    )
    tiers: list[Annotated[str, StringConstraints(min_length=1, max_length=63)]] | None = Field(
        default=None,
        max_length=32,
        description="Only callers of these tiers count against it; every caller when unset or empty.",
        json_schema_extra=list_type_set(),
    )
    currency: Currency = Field(
        default="USD",
        description="Currency of the limits; only models priced in it (LLMProvider spec.pricing) count.",
    )
    per_day: Amount | None = Field(
        default=None,
        description="Most that may be spent per UTC calendar day, a decimal string such as '50.00'.",
    )
    per_month: Amount | None = Field(
        default=None,
        description="Most that may be spent per UTC calendar month, a decimal string such as '1000'.",
    )

    @model_validator(mode="after")
    def _rules(self) -> SpendBudget:
        if self.per_day is None and self.per_month is None:
            raise ValueError(BUDGET_WINDOW_MESSAGE)
        if (
            self.per_day is not None
            and self.per_month is not None
            and Decimal(self.per_day) > Decimal(self.per_month)
        ):
            raise ValueError(BUDGET_ORDER_MESSAGE)
        if self.per == BudgetPer.AGENT and self.tiers:
            raise ValueError(BUDGET_TIERS_MESSAGE)
        _check_unique(self.tiers or [], "spec.budgets[].tiers")
        return self


class RateLimitPolicySpec(Model):
    """Desired state of a RateLimitPolicy: budgets, what they are counted per, tiers, and the counter store."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            CelRule(
                "(has(self.limits) && (has(self.limits.requestsPerMinute) || has(self.limits.tokensPerMinute)"
                " || has(self.limits.concurrency))) || (has(self.budgets) && size(self.budgets) > 0)",
                POLICY_LIMITS_MESSAGE,
            ),
            CelRule(
                "!has(self.limits) || !has(self.limits.burst) || has(self.limits.requestsPerMinute)",
                BURST_MESSAGE,
            ),
            CelRule(
                "!has(self.tiers) || (has(self.limits) && has(self.limits.requestsPerMinute))"
                " || self.tiers.all(t, !has(t.limits.burst) || has(t.limits.requestsPerMinute))",
                BURST_MESSAGE,
            ),
        )
    )

    limits: RateLimits = Field(
        default_factory=RateLimits,
        description="Default limits, for callers without a tier or with an unknown tier (optional with spec.budgets).",
    )
    count_by: CountBy = Field(
        default=CountBy.API_KEY,
        description="What a budget is counted per: apiKey, user (JWT subject), session, or agent (all callers).",
    )
    tiers: list[Tier] = Field(
        default_factory=list,
        max_length=32,
        description="Named overrides, selected by the caller's tier; names are unique.",
        json_schema_extra=list_type_map("name"),
    )
    backend: RateLimitBackend = Field(default_factory=RateLimitBackend, description="Where counters live.")
    on_redis_unavailable: Literal["failOpen", "failClosed"] = Field(
        default="failOpen",
        description="When Redis cannot be reached: failOpen serves with a per-replica limiter; failClosed answers 503.",
    )
    allowed_namespaces: list[NamespaceOrAll] = Field(
        default_factory=list,
        max_length=256,
        description="Namespaces whose agents may reference this policy; empty means its own only; '*' means all.",
        json_schema_extra=list_type_set(),
    )
    budgets: list[SpendBudget] = Field(
        default_factory=list,
        max_length=16,
        description=(
            "Spend limits per UTC calendar day and/or month, priced from the LLMProviders' spec.pricing; "
            "reserved at a request's worst-case cost before the upstream call and settled to its real cost "
            "after. A policy with budgets may leave spec.limits empty."
        ),
        json_schema_extra=list_type_map("name"),
    )

    @model_validator(mode="after")
    def _rules(self) -> RateLimitPolicySpec:
        if self.limits.is_empty() and not self.budgets:
            raise ValueError(POLICY_LIMITS_MESSAGE)
        every = [self.limits, *(t.limits for t in self.tiers)]
        if self.limits.requests_per_minute is None and any(
            lim.burst is not None and lim.requests_per_minute is None for lim in every
        ):
            raise ValueError(BURST_MESSAGE)
        _check_unique((t.name for t in self.tiers), "spec.tiers")
        _check_unique((b.name for b in self.budgets), "spec.budgets")
        _check_unique(self.allowed_namespaces, "spec.allowedNamespaces")
        return self


class RateLimitPolicyStatus(CommonStatus):
    """Observed state of a RateLimitPolicy."""

    agents: int | None = Field(default=None, ge=0, description="Agents that reference this policy.")


# --------------------------------------------------------------------------- SentientAgent


class ProviderRef(Model):
    """Reference to an LLMProvider."""

    # An LLMProvider's own name stops at PROVIDER_NAME_MAX: a longer reference could never resolve.
    name: str = Field(
        description="Name of the LLMProvider.",
        min_length=1,
        max_length=PROVIDER_NAME_MAX,
        pattern=DNS_SUBDOMAIN_PATTERN,
    )
    namespace: Namespace | None = Field(
        default=None,
        description="Namespace of the LLMProvider; defaults to the agent's. It must list the agent's namespace "
        "in allowedNamespaces.",
    )


class RateLimitPolicyRef(Model):
    """Reference to a RateLimitPolicy."""

    name: str = Field(
        description="Name of the RateLimitPolicy.",
        min_length=1,
        max_length=MAX_NAME,
        pattern=DNS_SUBDOMAIN_PATTERN,
    )
    namespace: Namespace | None = Field(
        default=None,
        description="Namespace of the RateLimitPolicy; defaults to the agent's. It must list the agent's "
        "namespace in allowedNamespaces.",
    )


class BalanceStrategy(StrEnum):
    """How a chain step with several members spreads its requests (docs/load-balancing.md)."""

    WEIGHT = "weight"
    LEAST_OUTSTANDING = "leastOutstanding"
    LOWEST_LATENCY = "lowestLatency"


assert tuple(s.value for s in BalanceStrategy) == BALANCE_STRATEGIES, "the runtime's strategies"

STEP_MEMBERS_UNIQUE_MESSAGE = "spec.llm.chain[].members: members must be unique by (providerRef, model)"
STEP_ONE_OF_MESSAGE = "spec.llm.chain[]: set exactly one of providerRef and members"
STEP_MODEL_MESSAGE = "spec.llm.chain[].model: a step with members sets the model per member"
STEP_STRATEGY_MESSAGE = "spec.llm.chain[].strategy: only a step with members has a strategy"
STEP_LATENCY_MESSAGE = "spec.llm.chain[].lowestLatency: only with strategy lowestLatency"
LATENCY_POSITIVE_MESSAGE = (
    "spec.llm.chain[].lowestLatency: halfLife and probeInterval must be greater than 0s"
)


class StepMember(Model):
    """One member of a load-balanced chain step: a provider (one API key), a model and a weight.

    Several keys of one upstream are several LLMProviders with the same endpoint and their own
    credentials; they share the runtime's connection pool to that endpoint.
    """

    provider_ref: ProviderRef = Field(description="The LLMProvider (name, optional namespace).")
    model: ModelName | None = Field(
        default=None, description="Model to request; the provider's defaultModel when unset."
    )
    # No schema default: a default inside a list item would make the stored step differ from the
    # one written (kubectl diff noise); unset means 1.
    weight: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description=(
            "Share of the step's requests (strategy weight), or how much in-flight load the member "
            "takes per unit (leastOutstanding); ignored by lowestLatency. 1 to 1000; 1 when unset."
        ),
    )

    def key(self) -> tuple[str, str, str]:
        """(provider name, provider namespace or '', model or ''): what must be unique in a step."""
        return (self.provider_ref.name, self.provider_ref.namespace or "", self.model or "")


class LowestLatencySettings(Model):
    """How the lowestLatency strategy measures and re-checks its members."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            CelRule(
                "duration(self.halfLife) > duration('0s') && duration(self.probeInterval) > duration('0s')",
                LATENCY_POSITIVE_MESSAGE,
            )
        )
    )

    half_life: Duration = Field(
        default="10s",
        description=(
            "Age at which a latency sample (time to first token; the whole answer when not streamed) "
            "counts half as much as a new one."
        ),
    )
    probe_interval: Duration = Field(
        default="5s",
        description="A member not chosen for this long gets the next request, so a recovered member is seen again.",
    )

    @model_validator(mode="after")
    def _positive(self) -> LowestLatencySettings:
        if min(parse_duration(self.half_life), parse_duration(self.probe_interval)) <= timedelta(0):
            raise ValueError(LATENCY_POSITIVE_MESSAGE)
        return self


class ChainEntry(Model):
    """One step of the failover chain: a provider and a model, or several members load-balanced.

    A step with ``members`` sends each request first to the member its ``strategy`` picks; when
    that member fails (after its retries) the step's other members are tried, healthy ones
    first, before the next step (docs/load-balancing.md).
    """

    model_config = ConfigDict(
        json_schema_extra=cel(
            CelRule("has(self.providerRef) != has(self.members)", STEP_ONE_OF_MESSAGE),
            CelRule("!has(self.members) || !has(self.model)", STEP_MODEL_MESSAGE),
            CelRule("has(self.members) || !has(self.strategy)", STEP_STRATEGY_MESSAGE),
            CelRule(
                "!has(self.lowestLatency) || (has(self.strategy) && self.strategy == 'lowestLatency')",
                STEP_LATENCY_MESSAGE,
            ),
        )
    )

    provider_ref: ProviderRef | None = Field(
        default=None,
        description="The LLMProvider (name, optional namespace). Exactly one of providerRef and members.",
    )
    model: ModelName | None = Field(
        default=None, description="Model to request; the provider's defaultModel when unset."
    )
    members: list[StepMember] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_STEP_MEMBERS,
        description=(
            "Providers (or several keys of one provider, one LLMProvider each) that share this step's "
            "requests, unique by (providerRef, model). Exactly one of providerRef and members."
        ),
        json_schema_extra=cel(
            CelRule(
                "self.all(x, self.exists_one(y, x.providerRef == y.providerRef"
                " && has(x.model) == has(y.model) && (!has(x.model) || x.model == y.model)))",
                STEP_MEMBERS_UNIQUE_MESSAGE,
            )
        ),
    )
    strategy: BalanceStrategy | None = Field(
        default=None,
        description=(
            "How members share the requests: weight (smooth weighted round robin, the default), "
            "leastOutstanding (fewest requests in flight) or lowestLatency (lowest recent latency, "
            "re-probing the others)."
        ),
    )
    lowest_latency: LowestLatencySettings | None = Field(
        default=None, description="Settings of the lowestLatency strategy."
    )

    @model_validator(mode="after")
    def _shape(self) -> ChainEntry:
        if (self.provider_ref is None) == (self.members is None):
            raise ValueError(STEP_ONE_OF_MESSAGE)
        if self.members is not None and self.model is not None:
            raise ValueError(STEP_MODEL_MESSAGE)
        if self.members is None and self.strategy is not None:
            raise ValueError(STEP_STRATEGY_MESSAGE)
        if self.lowest_latency is not None and self.strategy != BalanceStrategy.LOWEST_LATENCY:
            raise ValueError(STEP_LATENCY_MESSAGE)
        if self.members is not None:
            keys = [m.key() for m in self.members]
            if len(set(keys)) != len(keys):
                raise ValueError(STEP_MEMBERS_UNIQUE_MESSAGE)
        return self

    def targets(self) -> list[StepMember]:
        """The step's members in order; a plain entry is a step of one member of weight 1."""
        if self.members is not None:
            return list(self.members)
        assert self.provider_ref is not None, "checked by _shape"
        return [StepMember(provider_ref=self.provider_ref, model=self.model)]

    def key(self) -> tuple[Any, ...]:
        """What must be unique in a chain: (provider name, namespace or '', model or '') for a
        plain entry, the whole step (members with weights, strategy) for a balanced one."""
        if self.members is None:
            return self.targets()[0].key()
        return (
            tuple((*m.key(), m.weight) for m in self.members),
            self.strategy,
            self.lowest_latency.model_dump_json() if self.lowest_latency is not None else None,
        )


class LLMParameters(Model):
    """Sampling parameters sent to every provider of the chain."""

    temperature: float | None = Field(
        default=None,
        ge=0,
        le=2,
        description="Sampling temperature, 0 to 2; the provider's default when unset.",
    )
    max_tokens: int | None = Field(
        default=1024, ge=1, le=1_000_000, description="Maximum output tokens per answer."
    )
    top_p: float | None = Field(default=None, ge=0, le=1, description="Nucleus sampling, 0 to 1.")


CHAIN_UNIQUE_MESSAGE = "spec.llm.chain: entries must be unique by (providerRef, model)"


class LLMConfig(Model):
    """Which models the agent uses, in failover order."""

    chain: list[ChainEntry] = Field(
        min_length=1,
        max_length=MAX_CHAIN,
        description=(
            "Ordered failover chain: the first usable entry serves; on a retryable error (after its retries) "
            "or an open circuit breaker the next entry takes over. At least one entry, unique by (providerRef, model). "
            "An entry with members is a load-balanced step: its members share its requests."
        ),
        # Whole-entry equality is exactly (providerRef, model) and the apiserver's cost estimator
        # accepts it, unlike field-by-field comparisons with has() ternaries.
        json_schema_extra=cel(CelRule("self.all(x, self.exists_one(y, x == y))", CHAIN_UNIQUE_MESSAGE)),
    )
    parameters: LLMParameters = Field(default_factory=LLMParameters, description="Sampling parameters.")
    reveal_provider: bool = Field(
        default=False,
        description=(
            "Tell callers which chain entry answered: the /assist stream's failover and closing chunks "
            "then name the LLMProvider (namespace/name) and the upstream model, and /health lists them. "
            "Off by default: callers learn that a failover happened and its error class, never which "
            "provider or model. Upstream URLs are never sent; the OpenAI-compatible route always answers "
            "with the model the caller asked for."
        ),
    )

    @model_validator(mode="after")
    def _unique(self) -> LLMConfig:
        keys = [e.key() for e in self.chain]
        if len(set(keys)) != len(keys):
            raise ValueError(CHAIN_UNIQUE_MESSAGE)
        return self


class APIKeyAuth(Model):
    """API keys for callers, from a Secret."""

    secret_ref: SecretRef = Field(
        description=(
            "Secret whose data keys are key IDs and whose values are the API keys; an optional key "
            "'<keyId>.tier' gives that key's rate-limit tier. Keys are bound to the pods hashed."
        )
    )


JWT_JWKS_CREDENTIALS_MESSAGE = url_credentials_message("spec.auth.jwt.jwksURL")
OIDC_ISSUER_CREDENTIALS_MESSAGE = url_credentials_message("spec.auth.oidc.issuer")
OIDC_JWKS_CREDENTIALS_MESSAGE = url_credentials_message("spec.auth.oidc.jwksURL")
INTROSPECTION_ENDPOINT_CREDENTIALS_MESSAGE = url_credentials_message("spec.auth.oidc.introspection.endpoint")


class JWTAuth(Model):
    """JSON Web Tokens (bearer) for callers."""

    issuer: str = Field(description="Expected iss claim.", min_length=1, max_length=2048)
    audiences: list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME)]] = Field(
        min_length=1,
        max_length=32,
        description="Accepted aud values; a token must carry one of them.",
        json_schema_extra=list_type_set(),
    )
    jwks_url: Annotated[str, no_url_credentials(JWT_JWKS_CREDENTIALS_MESSAGE)] = Field(
        alias="jwksURL",
        max_length=2048,
        pattern=HTTP_URL_PATTERN,
        description="URL of the issuer's JWKS.",
        json_schema_extra=url_credentials_rule(JWT_JWKS_CREDENTIALS_MESSAGE),
    )
    tier_claim: str = Field(
        default="tier", min_length=1, max_length=MAX_NAME, description="Claim that names the caller's tier."
    )

    @model_validator(mode="after")
    def _unique(self) -> JWTAuth:
        _check_unique(self.audiences, "spec.auth.jwt.audiences")
        return self


INTROSPECTION_TIMEOUT_MESSAGE = positive_duration_message("spec.auth.oidc.introspection.timeout")
INTROSPECTION_CACHE_MESSAGE = (
    "spec.auth.oidc.introspection: cacheTTL must be at most 10m and negativeCacheTTL at most cacheTTL"
)
ROLE_GRANT_MESSAGE = "spec.auth.authorization.roles: each role needs apiKeys or claims (who is granted it)"
ROLE_API_KEYS_MESSAGE = "spec.auth.authorization.roles[].apiKeys: needs spec.auth.apiKeys"
ROLE_CLAIMS_MESSAGE = "spec.auth.authorization.roles[].claims: needs spec.auth.jwt or spec.auth.oidc"
AUTH_ROUTE_NAMES = ("assist", "chat", "models", "ws")
TierName = Annotated[
    str, StringConstraints(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
]


class OIDCIntrospection(Model):
    """RFC 7662 introspection of opaque access tokens, with a short positive and negative cache."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            CelRule(
                "duration(self.cacheTTL) <= duration('10m') && "
                "duration(self.negativeCacheTTL) <= duration(self.cacheTTL)",
                INTROSPECTION_CACHE_MESSAGE,
            )
        )
    )

    endpoint: Annotated[str | None, no_url_credentials(INTROSPECTION_ENDPOINT_CREDENTIALS_MESSAGE)] = Field(
        default=None,
        max_length=2048,
        pattern=HTTP_URL_PATTERN,
        description="Introspection endpoint; the discovery document's introspection_endpoint when unset.",
        json_schema_extra=url_credentials_rule(INTROSPECTION_ENDPOINT_CREDENTIALS_MESSAGE),
    )
    client_id: str = Field(
        alias="clientID",
        min_length=1,
        max_length=MAX_NAME,
        description="Client ID the runtime authenticates as to the introspection endpoint.",
    )
    client_secret_ref: SecretKeyRef = Field(
        description="Secret key holding the client secret (bound to the pods, sent as HTTP Basic, never logged)."
    )
    cache_ttl: Duration = Field(
        default="30s",
        alias="cacheTTL",
        description="How long an active answer is reused, never past the token's exp: a revoked token is "
        "refused at the latest this long after its revocation.",
    )
    negative_cache_ttl: Duration = Field(
        default="5s",
        alias="negativeCacheTTL",
        description="How long an inactive (or refused) answer is reused.",
    )
    max_entries: int = Field(
        default=10000, ge=1, le=1_000_000, description="Cached answers at most, per pod."
    )
    timeout: Annotated[Duration, positive_duration(INTROSPECTION_TIMEOUT_MESSAGE)] = Field(
        default="3s",
        description="Deadline of one introspection call.",
        json_schema_extra=positive_duration_rule(INTROSPECTION_TIMEOUT_MESSAGE),
    )

    @model_validator(mode="after")
    def _cache(self) -> OIDCIntrospection:
        ttl = parse_duration(self.cache_ttl)
        if ttl > timedelta(minutes=10) or parse_duration(self.negative_cache_ttl) > ttl:
            raise ValueError(INTROSPECTION_CACHE_MESSAGE)
        return self


class OIDCAuth(Model):
    """OAuth2 / OpenID Connect access tokens of one issuer: JWTs checked against the keys its discovery
    document names, opaque tokens by introspection."""

    issuer: Annotated[str, no_url_credentials(OIDC_ISSUER_CREDENTIALS_MESSAGE)] = Field(
        max_length=2048,
        pattern=HTTP_URL_PATTERN,
        description="Issuer URL (the iss claim); '<issuer>/.well-known/openid-configuration' gives the JWKS URL.",
        json_schema_extra=url_credentials_rule(OIDC_ISSUER_CREDENTIALS_MESSAGE),
    )
    audiences: list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME)]] = Field(
        min_length=1,
        max_length=32,
        description="Accepted aud values; a token must carry one of them (use one per agent).",
        json_schema_extra=list_type_set(),
    )
    jwks_url: Annotated[str | None, no_url_credentials(OIDC_JWKS_CREDENTIALS_MESSAGE)] = Field(
        default=None,
        alias="jwksURL",
        max_length=2048,
        pattern=HTTP_URL_PATTERN,
        description="JWKS URL; the discovery document's jwks_uri when unset.",
        json_schema_extra=url_credentials_rule(OIDC_JWKS_CREDENTIALS_MESSAGE),
    )
    introspection: OIDCIntrospection | None = Field(
        default=None, description="Introspection of opaque (non-JWT) access tokens; refused when unset."
    )
    tier_claim: str = Field(
        default="tier", min_length=1, max_length=MAX_NAME, description="Claim that names the caller's tier."
    )

    @model_validator(mode="after")
    def _unique(self) -> OIDCAuth:
        _check_unique(self.audiences, "spec.auth.oidc.audiences")
        return self


class ClaimGrant(Model):
    """Grants a role to tokens whose claim holds a value."""

    claim: str = Field(
        min_length=1,
        max_length=MAX_NAME,
        description="Claim name, e.g. scope (space-separated), roles or groups (lists); a dotted path "
        "reaches into objects (realm_access.roles).",
    )
    value: str = Field(min_length=1, max_length=MAX_NAME, description="Value the claim must hold.")


class Role(Model):
    """A role: what it allows (routes, models, rate-limit tier) and who holds it (API keys, token claims)."""

    name: str = Field(
        min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN, description="Role name (audit log)."
    )
    routes: list[Literal["assist", "chat", "models", "ws"]] | None = Field(
        default=None,
        max_length=len(AUTH_ROUTE_NAMES),
        description="Routes allowed: assist (/assist), chat (/v1/chat/completions), models (/v1/models), "
        "ws (/ws); all when empty.",
        json_schema_extra=list_type_set(),
    )
    models: list[ModelName] | None = Field(
        default=None,
        max_length=64,
        description="Model names a caller in this role may request (the OpenAI model field); any when empty.",
        json_schema_extra=list_type_set(),
    )
    tier: TierName | None = Field(
        default=None,
        description="Rate-limit tier (a tier of the agent's RateLimitPolicy) of callers acting in this role; "
        "the key's or token's own tier when unset.",
    )
    api_keys: list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME)]] | None = Field(
        default=None,
        max_length=256,
        description="Key IDs (data keys of spec.auth.apiKeys' Secret) granted this role.",
        json_schema_extra=list_type_set(),
    )
    claims: list[ClaimGrant] | None = Field(
        default=None, max_length=32, description="Token claim values granting this role."
    )


class Authorization(Model):
    """Roles of this agent's callers. Declared on the agent itself, they reach no other agent."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            CelRule(
                "self.roles.all(r, (has(r.apiKeys) && size(r.apiKeys) > 0) || (has(r.claims) && size(r.claims) > 0))",
                ROLE_GRANT_MESSAGE,
            )
        )
    )

    roles: list[Role] = Field(
        min_length=1,
        max_length=64,
        description="Roles, in order of preference: the first role of a caller that allows a request gives "
        "its tier. A caller holding no role that allows the request is refused with 403.",
        json_schema_extra=list_type_map("name"),
    )

    @model_validator(mode="after")
    def _rules(self) -> Authorization:
        _check_unique([r.name for r in self.roles], "spec.auth.authorization.roles")
        if not all(r.api_keys or r.claims for r in self.roles):
            raise ValueError(ROLE_GRANT_MESSAGE)
        return self


class AuthConfig(Model):
    """How callers authenticate; at least one of apiKeys, jwt, oidc or anonymous: true."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            CelRule(
                "!has(self.authorization) || has(self.apiKeys) || "
                "!self.authorization.roles.exists(r, has(r.apiKeys) && size(r.apiKeys) > 0)",
                ROLE_API_KEYS_MESSAGE,
            ),
            CelRule(
                "!has(self.authorization) || has(self.jwt) || has(self.oidc) || "
                "!self.authorization.roles.exists(r, has(r.claims) && size(r.claims) > 0)",
                ROLE_CLAIMS_MESSAGE,
            ),
        )
    )

    api_keys: APIKeyAuth | None = Field(default=None, description="API keys from a Secret.")
    jwt: JWTAuth | None = Field(default=None, description="JWT bearer tokens.")
    oidc: OIDCAuth | None = Field(
        default=None, description="OAuth2 / OIDC access tokens (discovery, JWKS, introspection)."
    )
    authorization: Authorization | None = Field(
        default=None,
        description="Roles (routes, models, tier) granted to API keys and token claims; every authenticated "
        "caller may use every route when unset. See docs/auth.md.",
    )
    anonymous: bool = Field(
        default=False,
        description="Allow callers without credentials. Off by default; with apiKeys or jwt, credentials become optional.",
    )

    @model_validator(mode="after")
    def _grants(self) -> AuthConfig:
        roles = self.authorization.roles if self.authorization is not None else []
        if self.api_keys is None and any(r.api_keys for r in roles):
            raise ValueError(ROLE_API_KEYS_MESSAGE)
        if self.jwt is None and self.oidc is None and any(r.claims for r in roles):
            raise ValueError(ROLE_CLAIMS_MESSAGE)
        return self


SESSIONS_REDIS_MESSAGE = (
    "spec.sessions.redisSecretRef or spec.sessions.redis: required when spec.sessions.store is redis"
)
SESSIONS_REDIS_BOTH_MESSAGE = "spec.sessions.redisSecretRef and spec.sessions.redis: set one, not both"


SESSIONS_POSTGRES_MESSAGE = "spec.sessions.postgres: required when spec.sessions.store is postgres"
SESSIONS_POSTGRES_UNUSED_MESSAGE = "spec.sessions.postgres: set only when spec.sessions.store is postgres"
SESSIONS_TTL_MESSAGE = "spec.sessions.ttl: must be greater than 0s"
SESSIONS_REDIS_UNUSED_MESSAGE = (
    "spec.sessions.redisSecretRef, spec.sessions.redis: set only when spec.sessions.store is redis"
)


class PostgresSessions(Model):
    """The PostgreSQL database that keeps the sessions; the DSN comes from a Secret, never inline."""

    dsn_secret_ref: SecretKeyRef = Field(
        description=(
            "Secret key holding the DSN, a postgresql:// URL with user and password "
            "(postgresql://user:password@host:5432/db?sslmode=require). It is mounted into the "
            "agent pods as a file and never written to the config, status, Events or logs."
        )
    )
    pool_size: int = Field(
        default=10,
        ge=1,
        le=100,
        description=(
            "Most connections each runtime process holds; the database sees up to "
            "replicas x workers x poolSize. A request waits at most 2s for a free connection, "
            "then answers without history."
        ),
    )
    schema_name: str = Field(
        default="public",
        pattern=POSTGRES_IDENTIFIER_PATTERN,
        max_length=40,
        description="Schema of the sessions table (created when missing: the role needs CREATE on the database).",
    )
    table_name: str = Field(
        default="sentient_sessions",
        pattern=POSTGRES_IDENTIFIER_PATTERN,
        max_length=40,
        description=(
            "Table of the sessions, made and migrated by the runtime at start (versions recorded in "
            "<tableName>_schema_version). Agents may share one table: rows are keyed by agent name."
        ),
    )


class SessionsConfig(Model):
    """Conversation history."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            CelRule(
                "self.store != 'redis' || has(self.redisSecretRef) || has(self.redis)", SESSIONS_REDIS_MESSAGE
            ),
            CelRule("!has(self.redisSecretRef) || !has(self.redis)", SESSIONS_REDIS_BOTH_MESSAGE),
            CelRule("self.store != 'postgres' || has(self.postgres)", SESSIONS_POSTGRES_MESSAGE),
            CelRule("!has(self.postgres) || self.store == 'postgres'", SESSIONS_POSTGRES_UNUSED_MESSAGE),
            CelRule("duration(self.ttl) > duration('0s')", SESSIONS_TTL_MESSAGE),
            CelRule(
                "self.store == 'redis' || (!has(self.redisSecretRef) && !has(self.redis))",
                SESSIONS_REDIS_UNUSED_MESSAGE,
            ),
        )
    )

    store: Literal["memory", "redis", "postgres"] = Field(
        default="memory",
        description="memory (per replica), redis or postgres (both shared by every replica).",
    )
    ttl: Duration = Field(default="1h", description="Idle time after which a session expires.")
    max_turns: int = Field(default=50, ge=1, le=10000, description="Turns of history kept per session.")
    redis_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding the URL of a standalone Redis (the short form of redis with mode standalone).",
    )
    redis: RedisConnection | None = Field(
        default=None,
        description="Redis in any mode (standalone, cluster, sentinel); instead of redisSecretRef.",
    )
    postgres: PostgresSessions | None = Field(
        default=None, description="PostgreSQL database; required when store is postgres."
    )

    @model_validator(mode="after")
    def _redis(self) -> SessionsConfig:
        if self.store == "redis" and self.redis_secret_ref is None and self.redis is None:
            raise ValueError(SESSIONS_REDIS_MESSAGE)
        if self.redis_secret_ref is not None and self.redis is not None:
            raise ValueError(SESSIONS_REDIS_BOTH_MESSAGE)
        if self.store == "postgres" and self.postgres is None:
            raise ValueError(SESSIONS_POSTGRES_MESSAGE)
        if self.postgres is not None and self.store != "postgres":
            raise ValueError(SESSIONS_POSTGRES_UNUSED_MESSAGE)
        if self.store != "redis" and (self.redis_secret_ref is not None or self.redis is not None):
            # Unused, yet its Secrets would be required and bound: the agent blocked on a missing
            # Redis Secret while keeping sessions in memory.
            raise ValueError(SESSIONS_REDIS_UNUSED_MESSAGE)
        if parse_duration(self.ttl) <= timedelta(0):
            # Every session would expire as it is written: history silently never kept.
            raise ValueError(SESSIONS_TTL_MESSAGE)
        return self

    def connection(self) -> RedisConnection | None:
        """The Redis the sessions use, whichever form the spec used."""
        if self.redis is not None:
            return self.redis
        if self.redis_secret_ref is not None:
            return RedisConnection(address_secret_ref=self.redis_secret_ref)
        return None


CACHE_REDIS_MESSAGES = redis_messages("spec.cache.redis")
CACHE_REDIS_MESSAGE = "spec.cache.redis: required when spec.cache.backend is redis"
CACHE_MEMORY_MESSAGE = "spec.cache.redis: must not be set when spec.cache.backend is memory"
CACHE_ENTRY_BYTES_MESSAGE = "spec.cache.maxEntryBytes: must not exceed spec.cache.maxBytes"


class CacheRedis(RedisConnection):
    """Where the response cache's Redis is (give it maxmemory and an LRU eviction policy)."""

    MESSAGES: ClassVar[RedisMessages] = CACHE_REDIS_MESSAGES
    model_config = ConfigDict(json_schema_extra=redis_rules(CACHE_REDIS_MESSAGES))


class ResponseCacheConfig(Model):
    """Exact-match response cache: an identical request (same agent config, messages and sampling
    parameters) is answered from a stored answer, streamed answers replayed as streams."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            CelRule("self.backend != 'redis' || has(self.redis)", CACHE_REDIS_MESSAGE),
            CelRule("self.backend != 'memory' || !has(self.redis)", CACHE_MEMORY_MESSAGE),
            CelRule("self.maxEntryBytes <= self.maxBytes", CACHE_ENTRY_BYTES_MESSAGE),
        )
    )

    enabled: bool = Field(default=False, description="Turn the cache on (off by default).")
    backend: Literal["memory", "redis"] = Field(
        default="memory",
        description="memory (per runtime process, bounded by maxEntries and maxBytes) or redis (shared by every replica).",
    )
    ttl: Duration = Field(default="5m", description="How long a stored answer is served.")
    scope: Literal["agent", "principal"] = Field(
        default="agent",
        description=(
            "agent: one stored answer serves every caller of the agent (best hit ratio; a caller can learn "
            "that someone asked the same before); principal: each API key or token subject has its own entries."
        ),
    )
    max_entries: int = Field(default=1000, ge=1, le=1_000_000, description="memory: answers kept (LRU).")
    max_bytes: int = Field(
        default=64 << 20, ge=1024, le=1 << 34, description="memory: bytes of answers kept (LRU)."
    )
    max_entry_bytes: int = Field(
        default=1 << 20, ge=256, le=64 << 20, description="Answers larger than this are not stored."
    )
    redis: CacheRedis | None = Field(
        default=None, description="Redis settings; required when backend is redis."
    )

    @model_validator(mode="after")
    def _rules(self) -> ResponseCacheConfig:
        if self.backend == "redis" and self.redis is None:
            raise ValueError(CACHE_REDIS_MESSAGE)
        if self.backend == "memory" and self.redis is not None:
            raise ValueError(CACHE_MEMORY_MESSAGE)
        if self.max_entry_bytes > self.max_bytes:
            raise ValueError(CACHE_ENTRY_BYTES_MESSAGE)
        return self

    def connection(self) -> RedisConnection | None:
        """The Redis the cache uses when it is on with the redis backend, else None."""
        return self.redis if self.enabled and self.backend == "redis" else None


# A Kubernetes resource quantity (apimachinery's regex, without a sign: requests and limits are
# never negative), written as a string ("500m", "1Gi") or a whole number (2).
QUANTITY_PATTERN = r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
Quantity = (
    Annotated[int, Field(ge=0)] | Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN, max_length=64)]
)
_BINARY_SUFFIXES = ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_QUANTITY_SUFFIXES = {
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(_BINARY_SUFFIXES)},
    **{s: Decimal(10) ** e for s, e in (("n", -9), ("u", -6), ("m", -3), ("k", 3), ("M", 6), ("G", 9))},
    **{s: Decimal(10) ** e for s, e in (("T", 12), ("P", 15), ("E", 18))},
}
RESOURCES_ORDER_MESSAGE = "spec.deployment.resources: requests must not exceed limits"
# Kubernetes label and annotation syntax (IsQualifiedName, IsValidLabelValue): checked here so
# that a typo is refused at apply, not when the Deployment (or ServiceMonitor) is written.
# [.] rather than an escaped dot: the pattern is quoted into a CEL string as it is.
QUALIFIED_NAME_PATTERN = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE_PATTERN)]
MAX_LABELS = 64


def qualified_keys_message(path: str) -> str:
    """The message of the rule on the keys of the label or annotation map at ``path``."""
    return f"{path}: keys must be label keys ([prefix/]name: letters, digits, '-', '_', '.', name at most 63)"


def qualified_keys(message: str) -> AfterValidator:
    """Field metadata: every key of the map is a qualified name (twin of :func:`qualified_keys_rule`)."""

    def check(value: dict[str, str]) -> dict[str, str]:
        if any(not re.match(QUALIFIED_NAME_PATTERN, key) for key in value):
            raise ValueError(message)
        return value

    return AfterValidator(check)


def qualified_keys_rule(message: str) -> dict[str, Any]:
    """``json_schema_extra`` of a label or annotation map: the CEL rule on its keys."""
    return cel(CelRule(f"self.all(k, k.matches('{QUALIFIED_NAME_PATTERN}'))", message))


NODE_SELECTOR_MESSAGE = qualified_keys_message("spec.deployment.nodeSelector")
POD_ANNOTATIONS_MESSAGE = qualified_keys_message("spec.deployment.podAnnotations")
POD_LABELS_MESSAGE = qualified_keys_message("spec.deployment.podLabels")
SERVICE_MONITOR_LABELS_MESSAGE = qualified_keys_message("spec.monitoring.serviceMonitor.labels")


def parse_quantity(value: int | str) -> Decimal:
    """The amount a quantity (already matching QUANTITY_PATTERN) stands for."""
    text = str(value)
    for suffix in _BINARY_SUFFIXES:
        if text.endswith(suffix):
            return Decimal(text[: -len(suffix)]) * _QUANTITY_SUFFIXES[suffix]
    if text[-1:] in _QUANTITY_SUFFIXES:
        return Decimal(text[:-1]) * _QUANTITY_SUFFIXES[text[-1]]
    return Decimal(text)  # plain or with an exponent (1e3)


class ResourceRequirements(Model):
    """Container resources of the runtime (requests and limits), as in a Pod spec."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            CelRule(
                "!has(self.requests) || !has(self.limits) || self.requests.all(k, !(k in self.limits)"
                " || quantity(string(self.requests[k])).compareTo(quantity(string(self.limits[k]))) <= 0)",
                RESOURCES_ORDER_MESSAGE,
            )
        )
    )

    requests: dict[str, Quantity] | None = Field(
        default=None,
        max_length=16,
        description="Resources the scheduler reserves, e.g. cpu: 100m, memory: 128Mi.",
    )
    limits: dict[str, Quantity] | None = Field(
        default=None, max_length=16, description="Most the container may use, e.g. memory: 512Mi."
    )

    @model_validator(mode="after")
    def _order(self) -> ResourceRequirements:
        limits = self.limits or {}
        for name, request in (self.requests or {}).items():
            if name in limits and parse_quantity(request) > parse_quantity(limits[name]):
                raise ValueError(RESOURCES_ORDER_MESSAGE)
        return self


class EnvVar(Model):
    """One environment variable of the runtime container, as in a Pod spec."""

    name: str = Field(
        min_length=1, max_length=MAX_NAME, pattern=r"^[^=]+$", description="Variable name (no '=')."
    )
    value: str | None = Field(default=None, description="Value; leave unset with valueFrom.")
    value_from: dict[str, Any] | None = Field(
        default=None,
        description="Source of the value (secretKeyRef, configMapKeyRef, fieldRef, ...), as in a Pod spec.",
    )


class DeploymentOverrides(Model):
    """Pod-level settings of the agent Deployment."""

    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        pattern=r"^[^\s]+$",
        description="Runtime image; defaults to the operator's setting.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="Image pull policy of the runtime container."
    )
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list,
        max_length=16,
        description="Secrets for pulling the image.",
        json_schema_extra=list_type_map("name"),
    )
    resources: ResourceRequirements | None = Field(
        default=None, description="Container resources (requests, limits), as in a Pod spec."
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=128,
        description="Extra environment variables of the runtime container, as in a Pod spec; names are unique.",
        json_schema_extra=list_type_map("name"),
    )
    node_selector: Annotated[dict[str, LabelValue], qualified_keys(NODE_SELECTOR_MESSAGE)] = Field(
        default_factory=dict,
        max_length=MAX_LABELS,
        description="Node selector of the pods.",
        json_schema_extra=qualified_keys_rule(NODE_SELECTOR_MESSAGE),
    )
    tolerations: list[dict[str, Any]] = Field(default_factory=list, description="Tolerations of the pods.")
    affinity: dict[str, Any] | None = Field(
        default=None, description="Affinity of the pods, as in a Pod spec."
    )
    pod_annotations: Annotated[
        dict[str, Annotated[str, StringConstraints(max_length=65536)]],
        qualified_keys(POD_ANNOTATIONS_MESSAGE),
    ] = Field(
        default_factory=dict,
        max_length=MAX_LABELS,
        description="Extra annotations of the pods.",
        json_schema_extra=qualified_keys_rule(POD_ANNOTATIONS_MESSAGE),
    )
    pod_labels: Annotated[dict[str, LabelValue], qualified_keys(POD_LABELS_MESSAGE)] = Field(
        default_factory=dict,
        max_length=MAX_LABELS,
        description="Extra labels of the pods.",
        json_schema_extra=qualified_keys_rule(POD_LABELS_MESSAGE),
    )
    service_account_name: str | None = Field(
        default=None,
        max_length=MAX_NAME,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Service account of the pods; the namespace's default when unset.",
    )
    priority_class_name: str | None = Field(
        default=None,
        max_length=MAX_NAME,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Priority class of the pods.",
    )
    agent_class: str | None = Field(
        default=None,
        max_length=512,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$",
        description="module:Class of a custom agent (an AbstractAgent) inside the image; the built-in chat agent when unset.",
    )

    @model_validator(mode="after")
    def _unique(self) -> DeploymentOverrides:
        _check_unique((e.name for e in self.env), "spec.deployment.env")
        _check_unique((r.name for r in self.image_pull_secrets), "spec.deployment.imagePullSecrets")
        return self


class ServiceConfig(Model):
    """The agent's Service."""

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        default="ClusterIP", description="Service type: ClusterIP, NodePort or LoadBalancer."
    )
    port: int = Field(
        default=80, ge=1, le=65535, description="Service port, forwarded to the runtime's port 8080."
    )


SERVER_LIMITS_POSITIVE_MESSAGE = (
    "spec.server.limits: headerTimeout, bodyTimeout and keepAliveTimeout must be greater than 0s"
)


class ServerLimitsConfig(Model):
    """Bounds the runtime puts on every client connection, before any authentication."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            CelRule(
                "duration(self.headerTimeout) > duration('0s') && duration(self.bodyTimeout) > duration('0s')"
                " && duration(self.keepAliveTimeout) > duration('0s')",
                SERVER_LIMITS_POSITIVE_MESSAGE,
            ),
        )
    )

    header_timeout: Duration = Field(
        default="10s",
        description="Time a client has to send the request line and headers; then 408 and the connection closes.",
    )
    body_timeout: Duration = Field(
        default="30s",
        description="Time a client has to send the request body once the headers are in; then 408 and close.",
    )
    keep_alive_timeout: Duration = Field(
        default="5s", description="How long an idle keep-alive connection is kept open between requests."
    )
    max_header_bytes: int = Field(
        default=65536,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest request line plus headers, in bytes; a larger one is refused with 431.",
    )
    max_connections: int = Field(
        default=1024,
        ge=1,
        le=1_000_000,
        description="Concurrent client connections per pod; a connection over the bound is answered 503 and closed.",
    )

    @model_validator(mode="after")
    def _positive(self) -> ServerLimitsConfig:
        durations = (self.header_timeout, self.body_timeout, self.keep_alive_timeout)
        if min(parse_duration(d) for d in durations) <= timedelta(0):
            raise ValueError(SERVER_LIMITS_POSITIVE_MESSAGE)
        return self


BUSY_POLL_MESSAGE = f"spec.server.busyPoll: at most {MAX_BUSY_POLL_SECONDS * 1000:g}ms"


class ServerConfig(Model):
    """The runtime's HTTP server."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            CelRule(
                f"duration(self.busyPoll) <= duration('{MAX_BUSY_POLL_SECONDS * 1000:g}ms')",
                BUSY_POLL_MESSAGE,
            ),
        )
    )

    workers: int = Field(
        default=1,
        ge=1,
        le=MAX_WORKERS,
        description=(
            "Server processes per pod, so that one pod uses more than one CPU (the default container "
            "resources grow with them). Redis rate limits and sessions stay exact; with the memory "
            "backends each worker counts and remembers on its own, as each replica does."
        ),
    )
    busy_poll: Duration = Field(
        default="1ms",
        description=(
            "How long the runtime's event loop polls instead of sleeping after a request starts or "
            "ends; 0s turns it off. It saves a wake-up per wait when requests take well under a "
            "millisecond (cached answers, refusals, a fast upstream), spends that time as CPU "
            "(sentient_busy_poll_seconds_total), and backs off by itself when waits are longer."
        ),
    )
    limits: ServerLimitsConfig = Field(
        default_factory=ServerLimitsConfig,
        description="Bounds on slow or greedy clients: request deadlines, header size, idle keep-alive, connections.",
    )

    @model_validator(mode="after")
    def _busy_poll_bounded(self) -> ServerConfig:
        if parse_duration(self.busy_poll) > timedelta(seconds=MAX_BUSY_POLL_SECONDS):
            raise ValueError(BUSY_POLL_MESSAGE)
        return self


AUTOSCALING_MESSAGE = "spec.autoscaling: minReplicas must not exceed maxReplicas"


class AutoscalingConfig(Model):
    """HorizontalPodAutoscaler settings; when set, the HPA owns the replica count."""

    model_config = ConfigDict(
        json_schema_extra=cel(CelRule("self.minReplicas <= self.maxReplicas", AUTOSCALING_MESSAGE))
    )

    min_replicas: int = Field(default=1, ge=1, le=1000, description="Lower bound of the replica count.")
    max_replicas: int = Field(ge=1, le=1000, description="Upper bound of the replica count.")
    target_cpu_utilization: int = Field(
        default=80,
        ge=1,
        le=100,
        alias="targetCPUUtilization",
        description="Average CPU utilization target, percent.",
    )

    @model_validator(mode="after")
    def _order(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(AUTOSCALING_MESSAGE)
        return self


class PodDisruptionBudgetConfig(Model):
    """PodDisruptionBudget of the agent's pods."""

    max_unavailable: int = Field(default=1, ge=0, le=1000, description="Pods that may be down at once.")


class ServiceMonitorConfig(Model):
    """Prometheus-operator ServiceMonitor."""

    enabled: bool = Field(
        default=False,
        description="Create a ServiceMonitor (only where the monitoring.coreos.com CRD exists).",
    )
    interval: Duration = Field(default="30s", description="Scrape interval.")
    labels: Annotated[dict[str, LabelValue], qualified_keys(SERVICE_MONITOR_LABELS_MESSAGE)] = Field(
        default_factory=dict,
        max_length=MAX_LABELS,
        description="Extra labels of the ServiceMonitor (for the Prometheus selector).",
        json_schema_extra=qualified_keys_rule(SERVICE_MONITOR_LABELS_MESSAGE),
    )


class MonitoringConfig(Model):
    """Monitoring integration."""

    service_monitor: ServiceMonitorConfig = Field(
        default_factory=ServiceMonitorConfig, description="Prometheus-operator ServiceMonitor."
    )


class RotationConfig(Model):
    """What happens when a credential changes."""

    strategy: Literal["HotReload", "RollingRestart"] = Field(
        default="HotReload",
        description=(
            "HotReload: the runtime re-reads the mounted files, no restart; RollingRestart: the "
            "Deployment rolls with maxUnavailable 0."
        ),
    )
    validate_before_rollout: bool = Field(
        default=False,
        description="Try a new key against the provider before binding it; keep the old one if it fails.",
    )


# --------------------------------------------------------------------------- tracing

TRACING_ENDPOINT_CREDENTIALS_MESSAGE = (
    "spec.tracing.endpoint: must not carry credentials (user:password@); put them in headersSecretRef"
)
TRACING_TIMEOUT_MESSAGE = "spec.tracing.timeout: must be between 100ms and 60s"
_URL_USERINFO = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*@")


class TracingConfig(Model):
    """OpenTelemetry traces of the agent's requests, exported over OTLP/HTTP (off when unset)."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            CelRule(
                "!self.endpoint.matches('^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*@')",
                TRACING_ENDPOINT_CREDENTIALS_MESSAGE,
            ),
            CelRule(
                "!has(self.timeout) || (duration(self.timeout) >= duration('100ms')"
                " && duration(self.timeout) <= duration('60s'))",
                TRACING_TIMEOUT_MESSAGE,
            ),
        )
    )

    endpoint: str = Field(
        max_length=2048,
        pattern=HTTP_URL_PATTERN,
        description=(
            "OTLP/HTTP base URL of the collector, e.g. http://otel-collector.monitoring:4318 "
            "(/v1/traces is added unless the URL has a path)."
        ),
    )
    protocol: Literal["http/protobuf"] = Field(default="http/protobuf", description="OTLP transport.")
    sampling_ratio: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Share of new traces recorded (0 to 1); a caller's traceparent sampled flag wins.",
    )
    headers_secret_ref: SecretRef | None = Field(
        default=None,
        description="Secret whose keys and values are the exporter's headers (e.g. authorization).",
    )
    capture_content: bool = Field(
        default=False,
        description="Record prompts and answers on the spans (gen_ai.input.messages, gen_ai.output.messages).",
    )
    timeout: Duration = Field(default="5s", description="Deadline of one export to the collector.")
    max_queue_size: int = Field(
        default=2048,
        ge=64,
        le=100_000,
        description="Finished spans kept while the collector is slow or down; more are dropped.",
    )

    @model_validator(mode="after")
    def _rules(self) -> TracingConfig:
        if _URL_USERINFO.match(self.endpoint):
            raise ValueError(TRACING_ENDPOINT_CREDENTIALS_MESSAGE)
        if not timedelta(milliseconds=100) <= parse_duration(self.timeout) <= timedelta(seconds=60):
            raise ValueError(TRACING_TIMEOUT_MESSAGE)
        return self


# --------------------------------------------------------------------------- guardrails

GUARDRAIL_ONE_KIND_MESSAGE = (
    "spec.guardrails: a check sets exactly one of size, patterns, pii, injection, moderation"
)
GUARDRAIL_REDACT_MESSAGE = "spec.guardrails: action redact applies to pii and patterns checks only"
GUARDRAIL_MODERATION_MESSAGE = "spec.guardrails.moderation: required when a check is a moderation check"
GUARDRAIL_NAMES_MESSAGE = "spec.guardrails: check names must be unique within input and within output"
GUARDRAIL_MODERATION_CHAIN_MESSAGE = (
    "spec.guardrails.moderation.providerRef: must name a provider of spec.llm.chain"
)
MAX_PATTERN = 512
MAX_PATTERNS = 64
MAX_CHECKS = 32

GuardrailPattern = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PATTERN)]
PIIEntity = Literal["email", "phone", "paymentCard", "iban", "secretKey"]


def _all_entities() -> list[PIIEntity]:
    return ["email", "phone", "paymentCard", "iban", "secretKey"]


class GuardrailSize(Model):
    """Size and structure limits; unset limits do not apply."""

    max_chars: int | None = Field(
        default=None, ge=1, le=10_000_000, description="Characters in all the checked texts."
    )
    max_messages: int | None = Field(
        default=None, ge=1, le=10_000, description="Messages in one request (input checks)."
    )
    max_lines: int | None = Field(default=None, ge=1, le=1_000_000, description="Lines in all.")
    max_line_chars: int | None = Field(
        default=None, ge=1, le=10_000_000, description="Characters in one line (catches minified payloads)."
    )


class GuardrailPatterns(Model):
    """Deny patterns, with allow patterns as exceptions (Python regular expressions).

    A pattern must compile and have a bounded cost: no back-references, no variable repeat
    inside an unbounded repeat such as ``(a+)+``; ``sentient validate`` and the operator check it.
    """

    deny: list[GuardrailPattern] = Field(
        min_length=1, max_length=MAX_PATTERNS, description="A match of any of them fires the check."
    )
    allow: list[GuardrailPattern] = Field(
        default_factory=list,
        max_length=MAX_PATTERNS,
        description="A deny match lying inside a match of one of these is ignored.",
    )

    @model_validator(mode="after")
    def _compile(self) -> GuardrailPatterns:
        check_patterns(self.deny, "deny")
        check_patterns(self.allow, "allow")
        return self


class GuardrailPII(Model):
    """Personal data and secrets: e-mail, phone, paymentCard (Luhn), iban (mod-97), secretKey."""

    entities: list[PIIEntity] = Field(
        default_factory=_all_entities,
        min_length=1,
        max_length=5,
        description="Kinds looked for; all of them when unset.",
        json_schema_extra=list_type_set(),
    )
    allow: list[GuardrailPattern] = Field(
        default_factory=list,
        max_length=MAX_PATTERNS,
        description="Values matched by one of these are kept (e.g. the support address).",
    )

    @model_validator(mode="after")
    def _compile(self) -> GuardrailPII:
        check_patterns(self.allow, "allow")
        return self


class GuardrailInjection(Model):
    """Prompt-injection heuristics: instruction override, role-play escape, hidden text, encoded payloads."""

    threshold: float = Field(
        default=0.5, ge=0.05, le=1.0, description="Score (0 to 1) at which the check fires."
    )


class GuardrailModerationCheck(Model):
    """A call to the moderation service of ``spec.guardrails.moderation``."""

    categories: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] = Field(
        default_factory=list,
        max_length=32,
        description="Categories that count; any flagged category when empty.",
    )
    threshold: float | None = Field(
        default=None, ge=0, le=1, description="Category score that counts; the service's own flag when unset."
    )


class GuardrailCheck(Model):
    """One check: exactly one kind, and what happens when it fires."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            CelRule(
                "[has(self.size), has(self.patterns), has(self.pii), has(self.injection), has(self.moderation)]"
                ".filter(x, x).size() == 1",
                GUARDRAIL_ONE_KIND_MESSAGE,
            ),
            CelRule(
                "!has(self.action) || self.action != 'redact' || has(self.pii) || has(self.patterns)",
                GUARDRAIL_REDACT_MESSAGE,
            ),
        )
    )

    name: str | None = Field(
        default=None,
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
        description="Name in metrics and the audit log; the kind (size, pii...) when unset.",
    )
    action: Literal["block", "redact", "flag"] = Field(
        default="block",
        description="block refuses (input) or ends (output) with an error; redact masks the matches "
        "(pii, patterns); flag only counts and audits.",
    )
    size: GuardrailSize | None = Field(default=None, description="Size and structure limits.")
    patterns: GuardrailPatterns | None = Field(default=None, description="Deny and allow patterns.")
    pii: GuardrailPII | None = Field(default=None, description="Personal data and secret keys.")
    injection: GuardrailInjection | None = Field(default=None, description="Prompt-injection heuristics.")
    moderation: GuardrailModerationCheck | None = Field(
        default=None, description="The external moderation service."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> GuardrailCheck:
        kinds = (self.size, self.patterns, self.pii, self.injection, self.moderation)
        if sum(k is not None for k in kinds) != 1:
            raise ValueError(GUARDRAIL_ONE_KIND_MESSAGE)
        if self.action == "redact" and self.pii is None and self.patterns is None:
            raise ValueError(GUARDRAIL_REDACT_MESSAGE)
        return self

    def label(self) -> str:
        """The name, or the kind when unnamed."""
        if self.name:
            return self.name
        kinds = {"size": self.size, "patterns": self.patterns, "pii": self.pii, "injection": self.injection}
        return next((k for k, v in kinds.items() if v is not None), "moderation")


MODERATION_TIMEOUT_MESSAGE = positive_duration_message("spec.guardrails.moderation.timeout")


class GuardrailModeration(Model):
    """The moderation service: an OpenAI-compatible ``/moderations`` endpoint of a chain provider."""

    provider_ref: ProviderRef = Field(
        description="A provider of spec.llm.chain (its endpoint, credentials and TLS are used)."
    )
    model: ModelName | None = Field(
        default=None,
        description="Moderation model, e.g. omni-moderation-latest; the service's default when unset.",
    )
    timeout: Annotated[Duration, positive_duration(MODERATION_TIMEOUT_MESSAGE)] = Field(
        default="2s",
        description="Deadline of one moderation call.",
        json_schema_extra=positive_duration_rule(MODERATION_TIMEOUT_MESSAGE),
    )
    on_error: Literal["failOpen", "failClosed"] = Field(
        default="failOpen",
        description="When the call fails or times out: failOpen lets the text through (counted, audited), "
        "failClosed blocks it.",
    )


class GuardrailRedaction(Model):
    """Masking of personal data and secrets outside prompts and answers."""

    logs: bool = Field(default=False, description="Mask them in the runtime's log lines.")
    audit: bool = Field(default=False, description="Mask them in audit records.")
    entities: list[PIIEntity] = Field(
        default_factory=_all_entities,
        min_length=1,
        max_length=5,
        description="Kinds masked; all of them when unset.",
        json_schema_extra=list_type_set(),
    )


def _unique_names_rule(field: str) -> str:
    return (
        f"!has(self.{field}) || self.{field}.all(x, !has(x.name) || "
        f"self.{field}.filter(y, has(y.name) && y.name == x.name).size() == 1)"
    )


def _moderation_rule(field: str) -> str:
    return f"!has(self.{field}) || !self.{field}.exists(c, has(c.moderation)) || has(self.moderation)"


class GuardrailsConfig(Model):
    """The validation pipeline: ordered checks of prompts (input) and answers (output). See docs/guardrails.md."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            CelRule(_unique_names_rule("input"), GUARDRAIL_NAMES_MESSAGE),
            CelRule(_unique_names_rule("output"), GUARDRAIL_NAMES_MESSAGE),
            CelRule(
                _moderation_rule("input") + " && (" + _moderation_rule("output") + ")",
                GUARDRAIL_MODERATION_MESSAGE,
            ),
        )
    )

    input: list[GuardrailCheck] = Field(
        default_factory=list,
        max_length=MAX_CHECKS,
        description="Checks of the caller's messages, in order, before the model is called.",
    )
    output: list[GuardrailCheck] = Field(
        default_factory=list,
        max_length=MAX_CHECKS,
        description="Checks of the answer, in order; on streams over a sliding window (streamWindow).",
    )
    moderation: GuardrailModeration | None = Field(
        default=None, description="The moderation service; required by moderation checks."
    )
    redact: GuardrailRedaction = Field(
        default_factory=GuardrailRedaction, description="Masking in log lines and audit records."
    )
    stream_window: int = Field(
        default=128,
        ge=16,
        le=4096,
        description="Characters of a streamed answer withheld until the output checks have seen what follows "
        "them (a match split across chunks is caught before any part of it is sent).",
    )

    @model_validator(mode="after")
    def _rules(self) -> GuardrailsConfig:
        for checks in (self.input, self.output):
            names = [c.name for c in checks if c.name]
            if len(set(names)) != len(names):
                raise ValueError(GUARDRAIL_NAMES_MESSAGE)
            if self.moderation is None and any(c.moderation is not None for c in checks):
                raise ValueError(GUARDRAIL_MODERATION_MESSAGE)
        return self


# --------------------------------------------------------------------------- audit sinks

AUDIT_SINK_ONE_KIND_MESSAGE = "spec.audit.sinks[]: set exactly one of syslog, http"
AUDIT_HTTP_TLS_MESSAGE = "spec.audit.sinks[].http.tls: needs an https:// url"
AUDIT_HEC_FIELDS_MESSAGE = (
    "spec.audit.sinks[].http: index, source and sourcetype apply to format splunkHec only"
)
MAX_AUDIT_SINKS = 8
AUDIT_URL_CREDENTIALS_MESSAGE = url_credentials_message("spec.audit.sinks[].http.url")
AUDIT_SYSLOG_TIMEOUT_MESSAGE = positive_duration_message("spec.audit.sinks[].syslog.timeout")
AUDIT_HTTP_TIMEOUT_MESSAGE = positive_duration_message("spec.audit.sinks[].http.timeout")


class AuditSinkTLS(Model):
    """TLS of a sink's connection: the CA that signed the receiver's certificate."""

    ca_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="PEM CA bundle (Secret key in the agent's namespace); the system CAs when unset.",
    )
    server_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Name checked in the receiver's certificate; the host of the address or URL when unset.",
    )


class AuditSyslogSink(Model):
    """Syslog: RFC 5424 messages over TCP, octet-counting framing (RFC 6587), TLS when tls is set (RFC 5425)."""

    address: HostPort = Field(description="host:port of the collector, e.g. rsyslog.logging.svc:6514.")
    tls: AuditSinkTLS | None = Field(default=None, description="TLS (RFC 5425); plain TCP when unset.")
    facility: SyslogFacility = Field(default="authpriv", description="Syslog facility of the messages.")
    app_name: str = Field(
        default="sentient",
        max_length=48,
        pattern=SYSLOG_APP_NAME_PATTERN,
        description="APP-NAME of the messages (printable ASCII, no space, at most 48).",
    )
    structured_data: bool = Field(
        default=False,
        description="Add an SD-ELEMENT [audit@32473 seq event worker] to every message; MSG is the "
        "record's JSON line either way.",
    )
    timeout: Annotated[Duration, positive_duration(AUDIT_SYSLOG_TIMEOUT_MESSAGE)] = Field(
        default="5s",
        description="Connect and write timeout.",
        json_schema_extra=positive_duration_rule(AUDIT_SYSLOG_TIMEOUT_MESSAGE),
    )


class AuditHTTPSink(Model):
    """HTTP: batches of records POSTed as Splunk HEC events or as JSON lines."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            CelRule("!has(self.tls) || self.url.startsWith('https://')", AUDIT_HTTP_TLS_MESSAGE),
            CelRule(
                "!has(self.format) || self.format == 'splunkHec' || "
                "(!has(self.index) && !has(self.source) && !has(self.sourcetype))",
                AUDIT_HEC_FIELDS_MESSAGE,
            ),
        )
    )

    url: Annotated[str, no_url_credentials(AUDIT_URL_CREDENTIALS_MESSAGE)] = Field(
        max_length=2048,
        pattern=HTTP_URL_PATTERN,
        description="URL posted to, e.g. https://splunk:8088 (splunkHec adds /services/collector/event when "
        "the URL has no path).",
        json_schema_extra=url_credentials_rule(AUDIT_URL_CREDENTIALS_MESSAGE),
    )
    format: AuditSinkFormat = Field(
        default="splunkHec",
        description="splunkHec: HEC event objects, Authorization: Splunk <token>; jsonLines: the records as "
        "JSON lines, Authorization: Bearer <token>.",
    )
    token_secret_ref: SecretKeyRef | None = Field(
        default=None, description="The HEC token (or bearer token); no Authorization header when unset."
    )
    index: str | None = Field(default=None, min_length=1, max_length=256, description="HEC index.")
    source: str | None = Field(default=None, min_length=1, max_length=256, description="HEC source.")
    sourcetype: str | None = Field(
        default=None, min_length=1, max_length=256, description="HEC sourcetype; sentient:audit when unset."
    )
    timeout: Annotated[Duration, positive_duration(AUDIT_HTTP_TIMEOUT_MESSAGE)] = Field(
        default="5s",
        description="Deadline of one POST.",
        json_schema_extra=positive_duration_rule(AUDIT_HTTP_TIMEOUT_MESSAGE),
    )
    tls: AuditSinkTLS | None = Field(default=None, description="TLS settings; needs an https:// url.")

    @model_validator(mode="after")
    def _rules(self) -> AuditHTTPSink:
        if self.tls is not None and not self.url.startswith("https://"):
            raise ValueError(AUDIT_HTTP_TLS_MESSAGE)
        if self.format != "splunkHec" and (self.index or self.source or self.sourcetype):
            raise ValueError(AUDIT_HEC_FIELDS_MESSAGE)
        return self


class AuditSink(Model):
    """One SIEM sink: exactly one of syslog and http, with its bounded on-disk buffer."""

    model_config = ConfigDict(
        json_schema_extra=cel(CelRule("has(self.syslog) != has(self.http)", AUDIT_SINK_ONE_KIND_MESSAGE))
    )

    name: str = Field(
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
        description="Name in metrics (sink label), logs and the spool directory.",
    )
    syslog: AuditSyslogSink | None = Field(
        default=None, description="A syslog collector (rsyslog, syslog-ng...)."
    )
    http: AuditHTTPSink | None = Field(
        default=None, description="An HTTP receiver (Splunk HEC, or JSON lines)."
    )
    max_buffer_mib: int = Field(
        default=64,
        ge=1,
        le=65536,
        alias="maxBufferMiB",
        description="Cap of the sink's spool in MiB: records wait there while the sink is down; beyond it "
        "the newest records are dropped (counted, and an audit.sink_overflow record says which).",
    )
    batch_size: int = Field(default=100, ge=1, le=10_000, description="Records per send at most.")

    @model_validator(mode="after")
    def _one_kind(self) -> AuditSink:
        if (self.syslog is None) == (self.http is None):
            raise ValueError(AUDIT_SINK_ONE_KIND_MESSAGE)
        return self

    @property
    def tls(self) -> AuditSinkTLS | None:
        """The TLS settings of whichever kind the sink is."""
        return (
            self.syslog.tls if self.syslog is not None else self.http.tls if self.http is not None else None
        )

    def secret_files(self) -> list[tuple[str, SecretKeyRef]]:
        """(bound-Secret file, Secret key it comes from) of every secret the sink reads: token, CA."""
        files: list[tuple[str, SecretKeyRef]] = []
        if self.http is not None and self.http.token_secret_ref is not None:
            files.append((audit_sink_token_file(self.name), self.http.token_secret_ref))
        if self.tls is not None and self.tls.ca_secret_ref is not None:
            files.append((audit_sink_ca_file(self.name), self.tls.ca_secret_ref))
        return files


class AuditSpool(Model):
    """Where the sinks' buffers live and how often they reach the disk."""

    persistent_volume_claim: str | None = Field(
        default=None,
        max_length=MAX_NAME,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="An existing PVC (claim name) holding the spool, so a backlog survives the pod (one "
        "replica with ReadWriteOnce); an emptyDir sized to the sinks' caps when unset.",
    )
    fsync_interval: Duration = Field(
        default="1s",
        description="Longest time an appended record waits for fsync (a node crash loses at most that); "
        "0s fsyncs at every record, in the request path.",
    )


class AuditConfig(Model):
    """Where the audit log goes besides the pod's stdout: SIEM sinks. See docs/audit.md."""

    sinks: list[AuditSink] = Field(
        default_factory=list,
        max_length=MAX_AUDIT_SINKS,
        description="SIEM sinks; every record goes to each of them, in order.",
        json_schema_extra=list_type_map("name"),
    )
    spool: AuditSpool = Field(default_factory=AuditSpool, description="The sinks' on-disk buffers.")

    @model_validator(mode="after")
    def _unique(self) -> AuditConfig:
        _check_unique((s.name for s in self.sinks), "spec.audit.sinks")
        return self


SYSTEM_PROMPT_MESSAGE = "spec.systemPrompt: exactly one of systemPrompt, systemPromptFrom must be set"
AUTH_MESSAGE = "spec.auth: set apiKeys, jwt, oidc, or anonymous: true"


class SentientAgentSpec(Model):
    """Desired state of a SentientAgent."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            CelRule("has(self.systemPrompt) != has(self.systemPromptFrom)", SYSTEM_PROMPT_MESSAGE),
            CelRule(
                "has(self.auth) && (has(self.auth.apiKeys) || has(self.auth.jwt) || has(self.auth.oidc)"
                " || (has(self.auth.anonymous) && self.auth.anonymous))",
                AUTH_MESSAGE,
            ),
            CelRule(
                "!has(self.guardrails) || !has(self.guardrails.moderation) || self.llm.chain.exists(e, "
                "(has(e.providerRef) && e.providerRef.name == self.guardrails.moderation.providerRef.name)"
                " || (has(e.members) && e.members.exists(m, "
                "m.providerRef.name == self.guardrails.moderation.providerRef.name)))",
                GUARDRAIL_MODERATION_CHAIN_MESSAGE,
            ),
        )
    )

    description: str = Field(
        default="", max_length=1024, description="What the agent does; shown in its agent card."
    )
    system_prompt: str | None = Field(
        default=None,
        max_length=100_000,
        description="System prompt. Exactly one of systemPrompt and systemPromptFrom.",
    )
    system_prompt_from: ConfigMapKeyRef | None = Field(
        default=None,
        description="System prompt from a ConfigMap key. Exactly one of systemPrompt and systemPromptFrom.",
    )
    capabilities: list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME)]] = Field(
        default_factory=list,
        max_length=64,
        description="Capabilities listed in the agent card.",
        json_schema_extra=list_type_set(),
    )
    llm: LLMConfig = Field(description="Models and the failover chain.")
    rate_limit_policy_ref: RateLimitPolicyRef | None = Field(
        default=None,
        description="RateLimitPolicy enforced on callers (name, optional namespace); none when unset.",
    )
    auth: AuthConfig = Field(
        default_factory=AuthConfig,
        description="How callers authenticate; at least one of apiKeys, jwt, oidc, anonymous.",
    )
    sessions: SessionsConfig = Field(
        default_factory=SessionsConfig, description="Conversation history storage."
    )
    replicas: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Number of runtime pods (kubectl scale works); ignored with autoscaling.",
    )
    deployment: DeploymentOverrides = Field(default_factory=DeploymentOverrides, description="Pod settings.")
    service: ServiceConfig = Field(default_factory=ServiceConfig, description="Service settings.")
    server: ServerConfig = Field(
        default_factory=ServerConfig,
        description="The runtime's HTTP server: limits on slow or greedy clients.",
    )
    autoscaling: AutoscalingConfig | None = Field(
        default=None, description="HorizontalPodAutoscaler; when set it owns the replica count."
    )
    pod_disruption_budget: PodDisruptionBudgetConfig | None = Field(
        default=None, description="PodDisruptionBudget of the pods; none when unset."
    )
    monitoring: MonitoringConfig = Field(
        default_factory=MonitoringConfig, description="Monitoring integration."
    )
    rotation: RotationConfig = Field(
        default_factory=RotationConfig, description="What happens when a provider credential rotates."
    )
    guardrails: GuardrailsConfig | None = Field(
        default=None,
        description="Input and output checks (size, patterns, PII, prompt injection, moderation); none when unset.",
    )
    audit: AuditConfig | None = Field(
        default=None,
        description="SIEM sinks of the audit log (syslog, Splunk HEC) with on-disk buffers; stdout only when unset.",
    )
    cache: ResponseCacheConfig | None = Field(
        default=None, description="Response cache of identical requests; off unless cache.enabled."
    )
    tracing: TracingConfig | None = Field(
        default=None, description="OpenTelemetry traces over OTLP (GenAI conventions); off when unset."
    )

    @model_validator(mode="after")
    def _rules(self) -> SentientAgentSpec:
        if (self.system_prompt is None) == (self.system_prompt_from is None):
            raise ValueError(SYSTEM_PROMPT_MESSAGE)
        if not (self.auth.api_keys or self.auth.jwt or self.auth.oidc or self.auth.anonymous):
            raise ValueError(AUTH_MESSAGE)
        moderation = self.guardrails.moderation if self.guardrails is not None else None
        if moderation is not None and not any(
            m.provider_ref.name == moderation.provider_ref.name for e in self.llm.chain for m in e.targets()
        ):
            raise ValueError(GUARDRAIL_MODERATION_CHAIN_MESSAGE)
        _check_unique(self.capabilities, "spec.capabilities")
        return self


class ChainEntryStatus(Model):
    """Observed state of one chain entry."""

    provider: str = Field(description="namespace/name of the LLMProvider.")
    model: str | None = Field(default=None, description="Resolved model.")
    resolved: bool = Field(description="The provider exists and this agent may use it.")
    ready: bool = Field(description="The provider's credentials are synced and bound.")
    reason: str | None = Field(default=None, description="Why not resolved or not ready.")


class SentientAgentStatus(CommonStatus):
    """Observed state of a SentientAgent."""

    replicas: int | None = Field(
        default=None, ge=0, description="Pods of the Deployment (scale subresource)."
    )
    ready_replicas: int | None = Field(default=None, ge=0, description="Ready pods.")
    selector: str | None = Field(
        default=None, description="Label selector of the pods (scale subresource, HPA)."
    )
    endpoint: str | None = Field(default=None, description="In-cluster URL of the agent.")
    providers_ready: str | None = Field(
        default=None,
        pattern=r"^[0-9]+/[0-9]+$",
        description="Chain entries resolved and ready, out of all, e.g. 2/3 (the Providers column).",
    )
    providers: list[ChainEntryStatus] = Field(
        default_factory=list,
        description="State per chain entry (each member of a load-balanced step), in order.",
    )
    config_hash: str | None = Field(default=None, description="Hash of the rendered runtime config.")


# --------------------------------------------------------------------------- whole resources


class ObjectMeta(BaseModel):
    """The part of metadata offline validation looks at; everything else is kept as is."""

    model_config = ConfigDict(extra="allow")

    name: str | None = Field(default=None, max_length=MAX_NAME, pattern=DNS_SUBDOMAIN_PATTERN)
    namespace: str | None = Field(default=None, max_length=63, pattern=DNS_LABEL_PATTERN)


PROVIDER_NAME_MESSAGE = "metadata.name: at most 63 characters (it is a label value of the provider's Secret)"


class _Resource(Model):
    """Common envelope of the three kinds."""

    KIND: ClassVar[str] = ""
    api_version: Literal["sentient.dev/v1alpha1"] = "sentient.dev/v1alpha1"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Standard object metadata.")


class LLMProvider(_Resource):
    """An LLMProvider resource."""

    KIND: ClassVar[str] = "LLMProvider"
    kind: Literal["LLMProvider"] = "LLMProvider"
    spec: LLMProviderSpec
    status: LLMProviderStatus | None = None

    @model_validator(mode="after")
    def _name(self) -> LLMProvider:
        name = self.metadata.name
        if name is not None and len(name) > PROVIDER_NAME_MAX:
            raise ValueError(PROVIDER_NAME_MESSAGE)
        return self


class RateLimitPolicy(_Resource):
    """A RateLimitPolicy resource."""

    KIND: ClassVar[str] = "RateLimitPolicy"
    kind: Literal["RateLimitPolicy"] = "RateLimitPolicy"
    spec: RateLimitPolicySpec
    status: RateLimitPolicyStatus | None = None


AGENT_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
AGENT_NAME_MESSAGE = (
    "metadata.name: must be a DNS-1035 label (lower-case letter first, at most 63 characters): "
    "it names the agent's Service"
)


class SentientAgent(_Resource):
    """A SentientAgent resource."""

    KIND: ClassVar[str] = "SentientAgent"
    kind: Literal["SentientAgent"] = "SentientAgent"
    spec: SentientAgentSpec
    status: SentientAgentStatus | None = None

    @model_validator(mode="after")
    def _name(self) -> SentientAgent:
        name = self.metadata.name
        if name is not None and (len(name) > 63 or not re.fullmatch(AGENT_NAME_PATTERN, name)):
            raise ValueError(AGENT_NAME_MESSAGE)
        return self


RESOURCE_CLASSES: dict[str, type[_Resource]] = {
    "LLMProvider": LLMProvider,
    "RateLimitPolicy": RateLimitPolicy,
    "SentientAgent": SentientAgent,
}


_M = TypeVar("_M", bound=BaseModel)


def validate_wire(cls: type[_M], obj: dict[str, Any]) -> _M:
    """``obj`` (a dict from YAML) validated as the apiserver types it: as JSON, strictly.

    Pydantic's lax mode would take ``"60"`` for an integer or ``"yes"`` for a boolean, which the
    apiserver refuses; offline validation must not pass a file that ``kubectl apply`` rejects.
    (Strict JSON still reads enum values from strings. ``default=str``: YAML's own timestamps.)
    """
    return cls.model_validate_json(json.dumps(obj, default=str), strict=True)


def parse_resource(obj: dict[str, Any]) -> LLMProvider | RateLimitPolicy | SentientAgent:
    """Validate one ``sentient.dev`` object (a dict from YAML) as the kind it declares.

    Raises ``ValueError`` for an unknown apiVersion/kind, and pydantic's
    ``ValidationError`` (a ``ValueError``) for an invalid object.
    """
    if obj.get("apiVersion") != API_VERSION:
        raise ValueError(f"apiVersion: expected {API_VERSION}, got {obj.get('apiVersion')!r}")
    cls = RESOURCE_CLASSES.get(str(obj.get("kind")))
    if cls is None:
        raise ValueError(
            f"kind: expected one of {', '.join(sorted(RESOURCE_CLASSES))}, got {obj.get('kind')!r}"
        )
    resource = validate_wire(cls, obj)
    assert isinstance(resource, LLMProvider | RateLimitPolicy | SentientAgent)
    return resource
