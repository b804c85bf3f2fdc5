"""Operator settings: read once from ``SENTIENT_*`` environment variables (the Helm values set them).

:func:`sentient_operator.main.main` builds one :class:`Settings` and passes it down (to the
leader elector, the kopf settings and the reconcilers, through kopf's ``memo``); nothing reads
the environment or a module-level copy of the settings afterwards. Each default is written once,
here, on its field.
"""

from __future__ import annotations

import os
import socket
from typing import Annotated, Any

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_RUNTIME_IMAGE = "ghcr.io/sentient-operator/agent-runtime:0.1.0"
ENV_PREFIX = "SENTIENT_"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


#: The operator's health/metrics port: not 8080, which ``sentient dev`` and the runtime use.
DEFAULT_METRICS_PORT = 8081


def _default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def in_cluster() -> bool:
    """Whether this process runs in a pod (the kubelet sets ``KUBERNETES_SERVICE_HOST``)."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def _default_metrics_host() -> str:
    # In a pod the kubelet probes and Prometheus scrapes the pod IP; on a laptop, loopback only.
    return "0.0.0.0" if in_cluster() else "127.0.0.1"


class Settings(BaseSettings):
    """Everything configurable about the operator process (immutable once built)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        # An empty variable means "the default", as a Helm value left blank does.
        env_ignore_empty=True,
        str_strip_whitespace=True,
        extra="ignore",
        frozen=True,
        # Settings(operator_namespace=...) in code and tests, as well as the variable names.
        populate_by_name=True,
    )

    #: Namespaces to watch; empty means the whole cluster (comma-separated).
    watch_namespaces: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: Runtime image when an agent does not name one.
    runtime_image: str = DEFAULT_RUNTIME_IMAGE
    #: The operator's own namespace: fingerprint-key Secret and leader Lease.
    operator_namespace: str = Field(
        "sentient-system",
        validation_alias=AliasChoices("SENTIENT_OPERATOR_NAMESPACE", "POD_NAMESPACE"),
    )
    #: Port of /metrics, /healthz and /readyz.
    metrics_port: int = DEFAULT_METRICS_PORT
    #: Address the metrics/health server binds: all interfaces in a pod, loopback elsewhere.
    metrics_host: str = Field(default_factory=_default_metrics_host)
    #: One active replica among several.
    leader_election: bool = True
    lease_name: str = "sentient-operator"
    #: Holder identity of the Lease (``SENTIENT_IDENTITY``, else ``POD_NAME``, else host-pid).
    identity: str = Field(
        default_factory=_default_identity,
        validation_alias=AliasChoices("SENTIENT_IDENTITY", "POD_NAME"),
    )
    lease_duration: float = 15.0
    lease_renew_interval: float = 5.0
    #: Re-check every agent this often even without events.
    resync_seconds: float = 600.0
    #: Compare the agents' children with the API this often (one cheap LIST per kind and
    #: namespace), to repair what a broken watch never reported; 0 turns it off.
    drift_check_seconds: float = 60.0
    #: Re-check each provider's bound key against its upstream this often (one models-list call
    #: per provider); a key is also checked as soon as it changes. 0: only when it changes.
    #: The default keeps a refused key visible within 30 s (interval + request timeout).
    credential_check_seconds: float = 15.0
    #: Credential checks in flight at once.
    credential_check_concurrency: int = 4
    #: First and largest retry delay after a failed reconcile.
    backoff_initial: float = 2.0
    backoff_max: float = 60.0
    #: Concurrent reconciles (distinct agents); at least 1. A reconcile mostly waits on the
    #: apiserver, so more workers than cores keep a fleet's creation moving.
    workers: int = 8
    #: Watch-stream timeouts: reconnect instead of stalling on a silent stream.
    watch_server_timeout: float = 300.0
    watch_client_timeout: float = 330.0
    watch_inactivity_timeout: float = 70.0
    log_level: str = "INFO"
    #: ``json`` (default) or ``text``.
    log_format: str = "json"
    #: A private Entra ID authority for Azure Key Vault sources (Azure Stack, a sovereign cloud
    #: msal does not know, a test server); instance discovery against the public cloud is then off.
    azure_authority_host: str = ""

    @field_validator("watch_namespaces", mode="before")
    @classmethod
    def _split_namespaces(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("leader_election", mode="before")
    @classmethod
    def _strict_bool(cls, value: Any) -> Any:
        # Only the spellings a Helm value or a shell uses; "maybe" or "t" is a mistake, not a yes.
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError("must be true or false")
        return value

    @field_validator("metrics_port", "workers", "credential_check_concurrency", mode="before")
    @classmethod
    def _integral(cls, value: Any) -> Any:
        # "4.0" is accepted as 4, as the Helm chart may render numbers as floats.
        if isinstance(value, str):
            return int(float(value))
        return value

    @field_validator("workers")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        return max(1, value)

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @field_validator("log_format")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()

    @classmethod
    def from_env(cls) -> Settings:
        """Settings from the environment; raises ``ValueError`` naming a malformed variable."""
        try:
            return cls()
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                field = str(err["loc"][0]) if err["loc"] else "?"
                # Name the variable the user set, not the Python field; never echo its value.
                problems.append(f"{_variable(field)}: {err['msg']}")
            raise ValueError("; ".join(problems)) from None

    def source_options(self) -> dict[str, dict[str, Any]]:
        """Credential-store options that are the operator's, not a provider's, to decide."""
        options: dict[str, dict[str, Any]] = {}
        if self.azure_authority_host:
            options["azure"] = {"authority_host": self.azure_authority_host}
        return options


def describe_variables() -> str:
    """``VARIABLE  default`` lines for every setting (``sentient-operator --help``)."""
    lines = []
    for name, info in Settings.model_fields.items():
        default = info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]
        if name == "identity":
            default = "<host>-<pid>"
        elif name == "metrics_host":
            default = "127.0.0.1 (0.0.0.0 in a pod)"
        shown = ",".join(default) if isinstance(default, list) else default
        lines.append(f"  {_variable(name):<44} {shown if shown not in ('', None) else '(unset)'}")
    return "\n".join(lines)


def _variable(field: str) -> str:
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"{ENV_PREFIX}{field.upper()}"
