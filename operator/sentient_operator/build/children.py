"""Desired child objects of a SentientAgent.

Every function returns a complete manifest for server-side apply: the fields
the operator owns and nothing else, with the standard labels and a controller
ownerReference. Output is deterministic for the same inputs.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from agent_runtime.config import (
    API_KEYS_FILE,
    AUDIT_KEY_FILE,
    CONFIG_FILE_KEY,
    DEFAULT_AUDIT_SPOOL_DIR,
    OIDC_CLIENT_SECRET_FILE,
    RATE_LIMIT_REDIS_URL_FILE,
    SESSIONS_POSTGRES_DSN_FILE,
    SESSIONS_REDIS_URL_FILE,
    TRACING_HEADERS_FILE,
    ServerConfig,
    duration_seconds,
    provider_ca_file,
    provider_credential_file,
)
from sentient_operator.api.v1alpha1 import AuditConfig
from sentient_operator.build.common import (
    CONFIG_HASH_ANNOTATION,
    CONFIG_MOUNT,
    CONTAINER_PORT,
    CREDENTIALS_FINGERPRINT_ANNOTATION,
    CREDENTIALS_MOUNT,
    METRICS_PORT,
    agent_labels,
    config_map_name,
    credentials_secret_name,
    owner_reference,
    selector_labels,
    with_desired_hash,
)
from sentient_operator.build.inputs import AgentInputs
from sentient_operator.build.runtime_config import render_config

DEFAULT_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"memory": "512Mi"},
}


def default_resources(workers: int) -> dict[str, Any]:
    """The container resources when the agent names none: :data:`DEFAULT_RESOURCES` per worker
    process (each worker holds its own interpreter, connections and caches)."""
    if workers <= 1:
        return DEFAULT_RESOURCES
    return {
        "requests": {"cpu": f"{100 * workers}m", "memory": f"{128 * workers}Mi"},
        "limits": {"memory": f"{512 * workers}Mi"},
    }


RUNTIME_UID = 65532
# After a pod is deleted, the endpoint controller and every kube-proxy need a moment to stop
# routing to it; a runtime signalled at once would refuse (503) the requests still arriving.
# The kubelet runs this sleep first, then sends SIGTERM.
PRE_STOP_SLEEP_SECONDS = 5
# The pod's grace covers the sleep, the runtime's own drain deadline and a margin to exit, so the
# kubelet never SIGKILLs a runtime that is still finishing streams inside its deadline.
TERMINATION_GRACE_SECONDS = (
    PRE_STOP_SLEEP_SECONDS + int(duration_seconds(ServerConfig().shutdown_grace) + 0.999) + 5
)


AUDIT_SPOOL_VOLUME = "audit-spool"
# Room beyond the sinks' caps in the spool's emptyDir: cursor files, and the kubelet evicts a pod
# whose emptyDir passes its sizeLimit, so the caps must never reach it.
AUDIT_SPOOL_MARGIN_MIB = 16


def audit_spool_volume(audit: AuditConfig, workers: int) -> dict[str, Any]:
    """The volume of the audit sinks' spools: the PVC named, or an emptyDir sized to the caps (each
    worker process keeps its own spool per sink)."""
    claim = audit.spool.persistent_volume_claim
    if claim:
        return {"name": AUDIT_SPOOL_VOLUME, "persistentVolumeClaim": {"claimName": claim}}
    size = sum(sink.max_buffer_mib for sink in audit.sinks) * max(1, workers) + AUDIT_SPOOL_MARGIN_MIB
    return {"name": AUDIT_SPOOL_VOLUME, "emptyDir": {"sizeLimit": f"{size}Mi"}}


def _metadata(inputs: AgentInputs, name: str, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": inputs.namespace,
        "labels": {**agent_labels(inputs.name), **(extra_labels or {})},
        "ownerReferences": [owner_reference(inputs.name, inputs.uid)],
    }


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def config_map(inputs: AgentInputs, rendered: tuple[str, str] | None = None) -> dict[str, Any]:
    """The ConfigMap ``NAME-config`` holding ``config.yaml`` (no secret values).

    ``rendered``: :func:`render_config` of ``inputs`` when the caller has it already.
    """
    text, _ = rendered or render_config(inputs)
    return with_desired_hash(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _metadata(inputs, config_map_name(inputs.name)),
            "data": {CONFIG_FILE_KEY: text},
        }
    )


def api_keys_document(inputs: AgentInputs) -> str:
    """``apikeys.json``: caller API keys hashed (SHA-256), with their tiers; never the keys."""
    doc = {
        key_id: {"sha256": hashlib.sha256(k.key.encode()).hexdigest(), "tier": k.tier}
        for key_id, k in sorted(inputs.api_keys.items())
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def credentials_data(inputs: AgentInputs) -> dict[str, str]:
    """The bound Secret's keys and values in clear (the caller encodes them)."""
    data: dict[str, str] = {}
    for provider in inputs.providers:
        if provider.api_key is not None:
            data[provider_credential_file(provider.namespace, provider.name)] = provider.api_key
        if provider.ca_pem is not None:
            data[provider_ca_file(provider.namespace, provider.name)] = provider.ca_pem
    if inputs.spec.auth.api_keys is not None:
        data[API_KEYS_FILE] = api_keys_document(inputs)
    if inputs.audit_key:
        data[AUDIT_KEY_FILE] = inputs.audit_key
    if inputs.oidc_client_secret is not None:
        data[OIDC_CLIENT_SECRET_FILE] = inputs.oidc_client_secret
    if inputs.policy is not None and inputs.policy.redis_url is not None:
        data[RATE_LIMIT_REDIS_URL_FILE] = inputs.policy.redis_url
    if inputs.policy is not None:
        data.update(inputs.policy.redis_files)
    if inputs.sessions_redis_url is not None:
        data[SESSIONS_REDIS_URL_FILE] = inputs.sessions_redis_url
    data.update(inputs.sessions_redis_files)
    data.update(inputs.audit_sink_files)
    if inputs.sessions_postgres_dsn is not None:
        data[SESSIONS_POSTGRES_DSN_FILE] = inputs.sessions_postgres_dsn
    data.update(inputs.cache_redis_files)
    if inputs.tracing_headers is not None:
        data[TRACING_HEADERS_FILE] = inputs.tracing_headers
    return data


def credentials_secret(inputs: AgentInputs) -> dict[str, Any]:
    """The bound Secret ``NAME-credentials`` mounted into the agent pods."""
    return with_desired_hash(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": _metadata(inputs, credentials_secret_name(inputs.name)),
            "type": "Opaque",
            "data": {k: _b64(v) for k, v in sorted(credentials_data(inputs).items())},
        }
    )


def desired_replicas(inputs: AgentInputs) -> int:
    """Replicas the agent aims at (the HPA's minimum when autoscaling)."""
    if inputs.spec.autoscaling is not None:
        return inputs.spec.autoscaling.min_replicas
    return inputs.spec.replicas


def deployment(inputs: AgentInputs, rendered: tuple[str, str] | None = None) -> dict[str, Any]:
    """The Deployment of the agent runtime, hardened to the restricted pod-security profile.

    ``rendered``: :func:`render_config` of ``inputs`` when the caller has it already.
    """
    spec = inputs.spec
    overrides = spec.deployment
    _, config_hash = rendered or render_config(inputs)
    annotations = {**overrides.pod_annotations, CONFIG_HASH_ANNOTATION: config_hash}
    # Only RollingRestart rolls pods on rotation; HotReload relies on the runtime re-reading files.
    if spec.rotation.strategy == "RollingRestart" and inputs.credentials_fingerprint:
        annotations[CREDENTIALS_FINGERPRINT_ANNOTATION] = inputs.credentials_fingerprint
    env: list[dict[str, Any]] = [
        {"name": "SENTIENT_CONFIG", "value": f"{CONFIG_MOUNT}/{CONFIG_FILE_KEY}"},
        {"name": "SENTIENT_CREDENTIALS_DIR", "value": CREDENTIALS_MOUNT},
        *(var.to_wire() for var in overrides.env),
    ]
    container: dict[str, Any] = {
        "name": "agent",
        "image": overrides.image or inputs.image,
        "env": env,
        "ports": [
            {"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "livenessProbe": {
            "httpGet": {"path": "/live", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 2,
        },
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SLEEP_SECONDS}}},
        "resources": (
            overrides.resources.to_wire()
            if overrides.resources is not None
            else default_resources(spec.server.workers)
        ),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
            {"name": "credentials", "mountPath": CREDENTIALS_MOUNT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - a private emptyDir
        ],
    }
    if overrides.image_pull_policy:
        container["imagePullPolicy"] = overrides.image_pull_policy
    pod_spec: dict[str, Any] = {
        # The runtime never calls the Kubernetes API; a token would only widen the blast radius.
        "automountServiceAccountToken": overrides.service_account_name is not None,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNTIME_UID,
            "runAsGroup": RUNTIME_UID,
            "fsGroup": RUNTIME_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "containers": [container],
        "volumes": [
            {"name": "config", "configMap": {"name": config_map_name(inputs.name)}},
            {
                "name": "credentials",
                "secret": {"secretName": credentials_secret_name(inputs.name), "defaultMode": 0o440},
            },
            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
        ],
    }
    if spec.audit is not None and spec.audit.sinks:
        container["volumeMounts"].append({"name": AUDIT_SPOOL_VOLUME, "mountPath": DEFAULT_AUDIT_SPOOL_DIR})
        pod_spec["volumes"].append(audit_spool_volume(spec.audit, spec.server.workers))
    if overrides.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": ref.name} for ref in overrides.image_pull_secrets]
    if overrides.priority_class_name:
        pod_spec["priorityClassName"] = overrides.priority_class_name
    if overrides.service_account_name:
        pod_spec["serviceAccountName"] = overrides.service_account_name
    if overrides.node_selector:
        pod_spec["nodeSelector"] = dict(overrides.node_selector)
    if overrides.tolerations:
        pod_spec["tolerations"] = list(overrides.tolerations)
    if overrides.affinity:
        pod_spec["affinity"] = overrides.affinity
    dep_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(inputs.name)},
        "revisionHistoryLimit": 3,
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {
            "metadata": {
                "labels": {**overrides.pod_labels, **agent_labels(inputs.name)},
                "annotations": annotations,
            },
            "spec": pod_spec,
        },
    }
    # With autoscaling the HPA owns the replica count; applying one would fight it.
    if spec.autoscaling is None:
        dep_spec["replicas"] = spec.replicas
    return with_desired_hash(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _metadata(inputs, inputs.name),
            "spec": dep_spec,
        }
    )


def service(inputs: AgentInputs) -> dict[str, Any]:
    """The Service: ``spec.service.port`` -> http (8080) and 9090 -> metrics."""
    return with_desired_hash(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(inputs, inputs.name),
            "spec": {
                "type": inputs.spec.service.type,
                "selector": selector_labels(inputs.name),
                "ports": [
                    {
                        "name": "http",
                        "port": inputs.spec.service.port,
                        "targetPort": "http",
                        "protocol": "TCP",
                    },
                    {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
                ],
            },
        }
    )


def service_monitor(inputs: AgentInputs) -> dict[str, Any]:
    """The prometheus-operator ServiceMonitor scraping the metrics port."""
    monitor = inputs.spec.monitoring.service_monitor
    return with_desired_hash(
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": _metadata(inputs, inputs.name, dict(monitor.labels)),
            "spec": {
                "selector": {"matchLabels": selector_labels(inputs.name)},
                "endpoints": [{"port": "metrics", "path": "/metrics", "interval": monitor.interval}],
            },
        }
    )


def horizontal_pod_autoscaler(inputs: AgentInputs) -> dict[str, Any]:
    """An autoscaling/v2 HPA on CPU utilisation."""
    scaling = inputs.spec.autoscaling
    if scaling is None:
        raise ValueError("agent has no spec.autoscaling")
    return with_desired_hash(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": _metadata(inputs, inputs.name),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": inputs.name},
                "minReplicas": scaling.min_replicas,
                "maxReplicas": max(scaling.max_replicas, scaling.min_replicas),
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {
                                "type": "Utilization",
                                "averageUtilization": scaling.target_cpu_utilization,
                            },
                        },
                    }
                ],
            },
        }
    )


def pod_disruption_budget(inputs: AgentInputs) -> dict[str, Any]:
    """A PDB (built when replicas > 1 or spec.podDisruptionBudget is set); one pod down by default."""
    config = inputs.spec.pod_disruption_budget
    max_unavailable = config.max_unavailable if config is not None else 1
    return with_desired_hash(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": _metadata(inputs, inputs.name),
            "spec": {
                "maxUnavailable": max_unavailable,
                "selector": {"matchLabels": selector_labels(inputs.name)},
            },
        }
    )


def build_children(
    inputs: AgentInputs, rendered: tuple[str, str] | None = None
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Every child the agent should have, and the (apiVersion, kind) of those it should not.

    Optional children that are not wanted are listed so that the caller deletes
    leftovers (e.g. an HPA after autoscaling was switched off). The config is rendered once
    (``rendered``: the caller's :func:`render_config` of ``inputs``, if it has one).
    """
    rendered = rendered or render_config(inputs)
    wanted = [
        config_map(inputs, rendered),
        credentials_secret(inputs),
        deployment(inputs, rendered),
        service(inputs),
    ]
    unwanted: list[tuple[str, str]] = []
    if inputs.spec.autoscaling is not None:
        wanted.append(horizontal_pod_autoscaler(inputs))
    else:
        unwanted.append(("autoscaling/v2", "HorizontalPodAutoscaler"))
    if desired_replicas(inputs) > 1 or inputs.spec.pod_disruption_budget is not None:
        wanted.append(pod_disruption_budget(inputs))
    else:
        unwanted.append(("policy/v1", "PodDisruptionBudget"))
    if inputs.spec.monitoring.service_monitor.enabled and inputs.service_monitor_available:
        wanted.append(service_monitor(inputs))
    elif inputs.service_monitor_available:
        unwanted.append(("monitoring.coreos.com/v1", "ServiceMonitor"))
    return wanted, unwanted
