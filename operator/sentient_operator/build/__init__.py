"""Pure builders: (agent spec, resolved inputs) -> desired Kubernetes manifests.

Nothing in this package performs I/O; every function is deterministic, so a
re-run of the operator renders byte-identical objects and writes nothing.
"""

from sentient_operator.build.children import (
    build_children,
    config_map,
    credentials_secret,
    deployment,
    horizontal_pod_autoscaler,
    pod_disruption_budget,
    service,
    service_monitor,
)
from sentient_operator.build.common import (
    CONFIG_HASH_ANNOTATION,
    CREDENTIALS_FINGERPRINT_ANNOTATION,
    agent_labels,
    config_map_name,
    credentials_secret_name,
    endpoint_url,
    owner_reference,
    selector_labels,
    selector_string,
)
from sentient_operator.build.inputs import AgentInputs, ResolvedPolicy, ResolvedProvider
from sentient_operator.build.runtime_config import build_runtime_config, render_config

__all__ = [
    "CONFIG_HASH_ANNOTATION",
    "CREDENTIALS_FINGERPRINT_ANNOTATION",
    "AgentInputs",
    "ResolvedPolicy",
    "ResolvedProvider",
    "agent_labels",
    "build_children",
    "build_runtime_config",
    "config_map",
    "config_map_name",
    "credentials_secret",
    "credentials_secret_name",
    "deployment",
    "endpoint_url",
    "horizontal_pod_autoscaler",
    "owner_reference",
    "pod_disruption_budget",
    "render_config",
    "selector_labels",
    "selector_string",
    "service",
    "service_monitor",
]
