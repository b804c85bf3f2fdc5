"""Names, labels, owner references and hashes shared by every builder."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sentient_operator.api.v1alpha1 import API_VERSION

MANAGED_BY = "sentient-operator"
AGENT_LABEL = "sentient.dev/agent"
PROVIDER_LABEL = "sentient.dev/provider"
CONFIG_HASH_ANNOTATION = "sentient.dev/config-hash"
CREDENTIALS_FINGERPRINT_ANNOTATION = "sentient.dev/credentials-fingerprint"
# On every child: hash of the desired manifest, so an unchanged child is never re-sent.
DESIRED_HASH_ANNOTATION = "sentient.dev/desired-hash"

CONTAINER_PORT = 8080
METRICS_PORT = 9090
CONFIG_MOUNT = "/etc/sentient/config"
CREDENTIALS_MOUNT = "/etc/sentient/credentials"


def config_map_name(agent: str) -> str:
    """Name of the agent's runtime-config ConfigMap."""
    return f"{agent}-config"


def credentials_secret_name(agent: str) -> str:
    """Name of the agent's bound credentials Secret."""
    return f"{agent}-credentials"


def provider_secret_name(provider: str) -> str:
    """Name of the provider Secret the LLMProvider handler writes."""
    return f"sentient-provider-{provider}"


def selector_labels(agent: str) -> dict[str, str]:
    """Labels selecting the agent's pods (immutable once the Deployment exists)."""
    return {"app.kubernetes.io/name": "sentient-agent", "app.kubernetes.io/instance": agent}


def selector_string(agent: str) -> str:
    """The pod selector as a label-selector string (status.selector, for the scale subresource)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(agent).items()))


def agent_labels(agent: str) -> dict[str, str]:
    """Standard labels on every child of an agent."""
    return {
        **selector_labels(agent),
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/component": "agent",
        AGENT_LABEL: agent,
    }


def owner_reference(name: str, uid: str, kind: str = "SentientAgent") -> dict[str, Any]:
    """A controller ownerReference so that garbage collection removes the child with its owner."""
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def endpoint_url(agent: str, namespace: str, port: int) -> str:
    """In-cluster URL of the agent's Service."""
    return f"http://{agent}.{namespace}.svc:{port}"


def stable_hash(value: Any) -> str:
    """SHA-256 of a JSON value with sorted keys (for non-secret content only)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def with_desired_hash(obj: dict[str, Any]) -> dict[str, Any]:
    """Stamp ``obj`` with the hash of its own content (computed without the stamp)."""
    meta = obj.setdefault("metadata", {})
    annotations = meta.setdefault("annotations", {})
    annotations.pop(DESIRED_HASH_ANNOTATION, None)
    annotations[DESIRED_HASH_ANNOTATION] = stable_hash(obj)[:32]
    return obj
