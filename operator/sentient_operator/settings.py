"""Operator settings, read once from ``SENTIENT_*`` environment variables (the Helm values set them)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

DEFAULT_RUNTIME_IMAGE = "ghcr.io/sentient-operator/agent-runtime:0.1.0"


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default).strip() or default


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, got {raw!r}")


def _list(name: str) -> list[str]:
    return [part.strip() for part in os.environ.get(name, "").split(",") if part.strip()]


@dataclass(frozen=True)
class Settings:
    """Everything configurable about the operator process."""

    #: Namespaces to watch; empty means the whole cluster (``SENTIENT_WATCH_NAMESPACES``, comma-separated).
    watch_namespaces: list[str] = field(default_factory=list)
    #: Runtime image when an agent does not name one (``SENTIENT_RUNTIME_IMAGE``).
    runtime_image: str = DEFAULT_RUNTIME_IMAGE
    #: The operator's own namespace: fingerprint-key Secret and leader Lease (``POD_NAMESPACE``).
    operator_namespace: str = "sentient-system"
    #: Port of /metrics, /healthz and /readyz (``SENTIENT_METRICS_PORT``).
    metrics_port: int = 8080
    #: Address the metrics/health server binds (``SENTIENT_METRICS_HOST``).
    metrics_host: str = "0.0.0.0"
    #: One active replica among several (``SENTIENT_LEADER_ELECTION``).
    leader_election: bool = True
    lease_name: str = "sentient-operator"
    #: Holder identity (``POD_NAME``, else host-pid).
    identity: str = ""
    lease_duration: float = 15.0
    lease_renew_interval: float = 5.0
    #: Re-check every agent this often even without events (``SENTIENT_RESYNC_SECONDS``).
    resync_seconds: float = 600.0
    #: First and largest retry delay after a failed reconcile.
    backoff_initial: float = 2.0
    backoff_max: float = 60.0
    #: Concurrent reconciles (distinct agents).
    workers: int = 4
    #: Watch-stream timeouts: reconnect instead of stalling on a silent stream.
    watch_server_timeout: float = 300.0
    watch_client_timeout: float = 330.0
    watch_inactivity_timeout: float = 70.0
    log_level: str = "INFO"
    #: ``json`` (default) or ``text``.
    log_format: str = "json"

    @classmethod
    def from_env(cls) -> Settings:
        """Settings from the environment; raises ``ValueError`` naming a malformed variable."""
        return cls(
            watch_namespaces=_list("SENTIENT_WATCH_NAMESPACES"),
            runtime_image=_env("SENTIENT_RUNTIME_IMAGE", DEFAULT_RUNTIME_IMAGE),
            operator_namespace=_env("SENTIENT_OPERATOR_NAMESPACE", _env("POD_NAMESPACE", "sentient-system")),
            metrics_port=int(_float("SENTIENT_METRICS_PORT", 8080)),
            metrics_host=_env("SENTIENT_METRICS_HOST", "0.0.0.0"),
            leader_election=_bool("SENTIENT_LEADER_ELECTION", True),
            lease_name=_env("SENTIENT_LEASE_NAME", "sentient-operator"),
            identity=_env("SENTIENT_IDENTITY", _env("POD_NAME", f"{socket.gethostname()}-{os.getpid()}")),
            lease_duration=_float("SENTIENT_LEASE_DURATION", 15.0),
            lease_renew_interval=_float("SENTIENT_LEASE_RENEW_INTERVAL", 5.0),
            resync_seconds=_float("SENTIENT_RESYNC_SECONDS", 600.0),
            backoff_initial=_float("SENTIENT_BACKOFF_INITIAL", 2.0),
            backoff_max=_float("SENTIENT_BACKOFF_MAX", 60.0),
            workers=max(1, int(_float("SENTIENT_WORKERS", 4))),
            watch_server_timeout=_float("SENTIENT_WATCH_SERVER_TIMEOUT", 300.0),
            watch_client_timeout=_float("SENTIENT_WATCH_CLIENT_TIMEOUT", 330.0),
            watch_inactivity_timeout=_float("SENTIENT_WATCH_INACTIVITY_TIMEOUT", 70.0),
            log_level=_env("SENTIENT_LOG_LEVEL", "INFO").upper(),
            log_format=_env("SENTIENT_LOG_FORMAT", "json").lower(),
        )


_current: Settings | None = None


def get_settings() -> Settings:
    """The process's settings (read from the environment on first use)."""
    global _current
    if _current is None:
        _current = Settings.from_env()
    return _current


def set_settings(settings: Settings) -> None:
    """Replace the process's settings (tests)."""
    global _current
    _current = settings
