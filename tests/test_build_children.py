"""Builders: deterministic, hardened, contract-conformant manifests (no cluster)."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from typing import Any

import pytest

from agent_runtime.config import (
    DEFAULT_AUDIT_SPOOL_DIR,
    TRACING_HEADERS_FILE,
    ServerConfig,
    duration_seconds,
    parse_config,
    provider_credential_file,
)
from sentient_operator.api.v1alpha1 import LLMProviderSpec, RateLimitPolicySpec, SentientAgentSpec
from sentient_operator.build import (
    CONFIG_HASH_ANNOTATION,
    CREDENTIALS_FINGERPRINT_ANNOTATION,
    AgentInputs,
    ResolvedPolicy,
    ResolvedProvider,
    build_children,
    config_map,
    credentials_secret,
    deployment,
    render_config,
    service,
)
from sentient_operator.build.inputs import APIKey

UID = "0f3c9d8e-0000-4000-8000-000000000001"


def make_inputs(**spec_overrides: Any) -> AgentInputs:
    spec: dict[str, Any] = {
        "systemPrompt": "You are terse.",
        "llm": {"chain": [{"providerRef": {"name": "openai"}, "model": "gpt-4o-mini"}]},
        "auth": {"apiKeys": {"secretRef": {"name": "keys"}}},
    }
    spec.update(spec_overrides)
    provider = ResolvedProvider(
        namespace="team",
        name="openai",
        spec=LLMProviderSpec.model_validate(
            {"type": "openai", "credentials": {"secretRef": {"name": "openai-key", "key": "apiKey"}}}
        ),
        model="gpt-4o-mini",
        api_key="sk-provider-secret",
    )
    return AgentInputs(
        name="helper",
        namespace="team",
        uid=UID,
        spec=SentientAgentSpec.model_validate(spec),
        providers=[provider],
        image="example.org/runtime:1",
        system_prompt="You are terse.",
        api_keys={"alice": APIKey("caller-key-1", "gold"), "bob": APIKey("caller-key-2")},
        audit_key="audit-hmac-key",
    )


def secret_data(obj: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in obj["data"].items()}


def test_every_child_has_labels_and_controller_owner() -> None:
    inputs = make_inputs(replicas=2)
    wanted, _ = build_children(inputs)
    kinds = sorted(o["kind"] for o in wanted)
    assert kinds == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Secret", "Service"]
    for obj in wanted:
        meta = obj["metadata"]
        assert meta["namespace"] == "team"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "sentient-operator"
        assert meta["labels"]["app.kubernetes.io/instance"] == "helper"
        assert meta["labels"]["app.kubernetes.io/name"] == "sentient-agent"
        assert meta["labels"]["app.kubernetes.io/component"] == "agent"
        assert meta["labels"]["sentient.dev/agent"] == "helper"
        (owner,) = meta["ownerReferences"]
        assert owner == {
            "apiVersion": "sentient.dev/v1alpha1",
            "kind": "SentientAgent",
            "name": "helper",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def test_output_is_deterministic() -> None:
    first = json.dumps(build_children(make_inputs()), sort_keys=True)
    second = json.dumps(build_children(make_inputs()), sort_keys=True)
    assert first == second


def test_config_map_is_a_valid_runtime_config_without_secrets() -> None:
    cm = config_map(make_inputs())
    assert cm["metadata"]["name"] == "helper-config"
    text = cm["data"]["config.yaml"]
    config = parse_config(text)
    assert config.agent.name == "helper"
    assert config.agent.system_prompt == "You are terse."
    assert config.llm.chain[0].credential_file == provider_credential_file("team", "openai")
    assert config.llm.chain[0].endpoint == "https://api.openai.com/v1"
    assert config.auth.api_keys_file == "apikeys.json"
    for secret in ("sk-provider-secret", "caller-key-1", "audit-hmac-key"):
        assert secret not in text


def test_server_limits_are_rendered_into_the_runtime_config() -> None:
    default = parse_config(config_map(make_inputs())["data"]["config.yaml"]).server.limits
    assert (default.header_timeout, default.body_timeout, default.keep_alive_timeout) == ("10s", "30s", "5s")
    assert (default.max_header_bytes, default.max_connections) == (65536, 1024)
    limits = {"headerTimeout": "3s", "bodyTimeout": "20s", "keepAliveTimeout": "2s", "maxHeaderBytes": 16384}
    text = config_map(make_inputs(server={"limits": {**limits, "maxConnections": 200}}))["data"][
        "config.yaml"
    ]
    rendered = parse_config(text).server.limits
    assert rendered.to_wire() == {**limits, "maxConnections": 200}


def test_workers_are_rendered_and_default_resources_follow_them() -> None:
    assert parse_config(config_map(make_inputs())["data"]["config.yaml"]).server.workers == 1
    inputs = make_inputs(server={"workers": 3})
    assert parse_config(config_map(inputs)["data"]["config.yaml"]).server.workers == 3
    container = deployment(inputs)["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {
        "requests": {"cpu": "300m", "memory": "384Mi"},
        "limits": {"memory": "1536Mi"},
    }
    # Resources the agent names are its own, whatever the workers.
    own = {"requests": {"cpu": "2"}}
    inputs = make_inputs(server={"workers": 3}, deployment={"resources": own})
    assert deployment(inputs)["spec"]["template"]["spec"]["containers"][0]["resources"] == own


def test_reveal_provider_is_off_unless_the_agent_opts_in() -> None:
    def rendered(inputs: AgentInputs) -> bool:
        return parse_config(config_map(inputs)["data"]["config.yaml"]).llm.reveal_provider

    assert rendered(make_inputs()) is False
    chain = [{"providerRef": {"name": "openai"}, "model": "gpt-4o-mini"}]
    assert rendered(make_inputs(llm={"chain": chain, "revealProvider": True})) is True


def test_bound_secret_hashes_caller_keys_and_keeps_provider_key() -> None:
    data = secret_data(credentials_secret(make_inputs()))
    assert data[provider_credential_file("team", "openai")] == "sk-provider-secret"
    assert data["audit-key"] == "audit-hmac-key"
    keys = json.loads(data["apikeys.json"])
    assert keys == {
        "alice": {"sha256": hashlib.sha256(b"caller-key-1").hexdigest(), "tier": "gold"},
        "bob": {"sha256": hashlib.sha256(b"caller-key-2").hexdigest(), "tier": None},
    }
    assert "caller-key-1" not in data["apikeys.json"]


def test_redis_urls_are_bound() -> None:
    policy = ResolvedPolicy(
        namespace="team",
        name="std",
        spec=RateLimitPolicySpec.model_validate(
            {
                "limits": {"requestsPerMinute": 60},
                "backend": {"type": "redis", "redis": {"addressSecretRef": {"name": "redis", "key": "url"}}},
            }
        ),
        redis_url="redis://:pw@redis:6379/0",
    )
    inputs = replace(
        make_inputs(
            sessions={"store": "redis", "redisSecretRef": {"name": "redis", "key": "url"}},
            rateLimitPolicyRef={"name": "std"},
        ),
        policy=policy,
        sessions_redis_url="redis://:pw@redis:6379/1",
    )
    data = secret_data(credentials_secret(inputs))
    assert data["ratelimit-redis-url"] == "redis://:pw@redis:6379/0"
    assert data["sessions-redis-url"] == "redis://:pw@redis:6379/1"
    config = parse_config(config_map(inputs)["data"]["config.yaml"])
    assert config.rate_limit is not None
    assert config.rate_limit.backend.redis_url_file == "ratelimit-redis-url"
    assert config.rate_limit.policy == "team/std"
    assert config.sessions.redis_url_file == "sessions-redis-url"


def test_deployment_is_hardened() -> None:
    dep = deployment(make_inputs())
    spec = dep["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    assert container["image"] == "example.org/runtime:1"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/etc/sentient/config"]["readOnly"] is True
    assert mounts["/etc/sentient/credentials"]["readOnly"] is True
    assert "/tmp" in mounts
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "helper-config"
    assert volumes["credentials"]["secret"]["secretName"] == "helper-credentials"
    assert "emptyDir" in volumes["tmp"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["SENTIENT_CONFIG"] == "/etc/sentient/config/config.yaml"
    assert env["SENTIENT_CREDENTIALS_DIR"] == "/etc/sentient/credentials"


def test_pod_outlives_the_runtimes_drain_and_is_unrouted_before_sigterm() -> None:
    pod = deployment(make_inputs())["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # The kubelet sleeps first (endpoints and kube-proxy stop routing to the pod meanwhile), then
    # SIGTERMs; the pod's grace must cover the sleep plus the runtime's drain deadline.
    sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = duration_seconds(ServerConfig().shutdown_grace)
    assert sleep >= 3
    assert pod["terminationGracePeriodSeconds"] > sleep + drain


def test_config_hash_follows_the_prompt() -> None:
    a = make_inputs()
    b = replace(a, system_prompt="You are verbose.")
    _, hash_a = render_config(a)
    _, hash_b = render_config(b)
    assert hash_a != hash_b
    ann_a = deployment(a)["spec"]["template"]["metadata"]["annotations"]
    ann_b = deployment(b)["spec"]["template"]["metadata"]["annotations"]
    assert ann_a[CONFIG_HASH_ANNOTATION] == hash_a
    assert ann_b[CONFIG_HASH_ANNOTATION] == hash_b


@pytest.mark.parametrize(("strategy", "annotated"), [("HotReload", False), ("RollingRestart", True)])
def test_credentials_fingerprint_only_rolls_for_rolling_restart(strategy: str, annotated: bool) -> None:
    inputs = replace(make_inputs(rotation={"strategy": strategy}), credentials_fingerprint="hmac-sha256:abc")
    annotations = deployment(inputs)["spec"]["template"]["metadata"]["annotations"]
    assert (CREDENTIALS_FINGERPRINT_ANNOTATION in annotations) is annotated
    if annotated:
        assert annotations[CREDENTIALS_FINGERPRINT_ANNOTATION] == "hmac-sha256:abc"


def test_autoscaling_omits_replicas_and_adds_hpa() -> None:
    inputs = make_inputs(autoscaling={"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilization": 70})
    wanted, unwanted = build_children(inputs)
    by_kind = {o["kind"]: o for o in wanted}
    assert "replicas" not in by_kind["Deployment"]["spec"]
    hpa = by_kind["HorizontalPodAutoscaler"]["spec"]
    assert hpa["minReplicas"] == 2 and hpa["maxReplicas"] == 5
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "helper"}
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert "PodDisruptionBudget" in by_kind
    assert ("autoscaling/v2", "HorizontalPodAutoscaler") not in unwanted


def test_single_replica_has_no_pdb_or_hpa() -> None:
    wanted, unwanted = build_children(make_inputs())
    kinds = {o["kind"] for o in wanted}
    assert "PodDisruptionBudget" not in kinds and "HorizontalPodAutoscaler" not in kinds
    assert ("policy/v1", "PodDisruptionBudget") in unwanted
    assert ("autoscaling/v2", "HorizontalPodAutoscaler") in unwanted


def test_service_monitor_only_when_crd_available() -> None:
    spec = {"monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}}
    without, _ = build_children(make_inputs(**spec))
    assert "ServiceMonitor" not in {o["kind"] for o in without}
    with_crd, _ = build_children(replace(make_inputs(**spec), service_monitor_available=True))
    (monitor,) = [o for o in with_crd if o["kind"] == "ServiceMonitor"]
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_service_ports() -> None:
    svc = service(make_inputs(service={"port": 8000}))
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert ports["http"]["port"] == 8000 and ports["http"]["targetPort"] == "http"
    assert ports["metrics"]["port"] == 9090
    assert svc["spec"]["selector"] == {
        "app.kubernetes.io/name": "sentient-agent",
        "app.kubernetes.io/instance": "helper",
    }


def test_secret_values_never_in_repr() -> None:
    text = repr(make_inputs())
    for secret in ("caller-key-1", "audit-hmac-key", "sk-provider-secret"):
        assert secret not in text


def test_cluster_and_sentinel_redis_render_files_and_connections() -> None:
    policy = ResolvedPolicy(
        namespace="team",
        name="ha",
        spec=RateLimitPolicySpec.model_validate(
            {
                "limits": {"requestsPerMinute": 60},
                "backend": {
                    "type": "redis",
                    "redis": {
                        "mode": "cluster",
                        "cluster": {"nodes": ["redis-0.redis:6379", "redis-1.redis:6379"]},
                        "username": "sentient",
                        "passwordSecretRef": {"name": "redis", "key": "password"},
                        "tls": {"caSecretRef": {"name": "redis", "key": "ca.pem"}},
                        "keyPrefix": "team:rl:",
                    },
                },
            }
        ),
        redis_files={"ratelimit-redis-password": "pw", "ratelimit-redis-ca.pem": "PEM"},
    )
    sessions = {
        "store": "redis",
        "redis": {
            "mode": "sentinel",
            "sentinel": {"addresses": ["s-0:26379", "s-1:26379"], "masterName": "m"},
        },
    }
    inputs = replace(
        make_inputs(sessions=sessions, rateLimitPolicyRef={"name": "ha"}),
        policy=policy,
    )
    data = secret_data(credentials_secret(inputs))
    assert data["ratelimit-redis-password"] == "pw" and data["ratelimit-redis-ca.pem"] == "PEM"
    assert "ratelimit-redis-url" not in data and "sessions-redis-url" not in data
    text = config_map(inputs)["data"]["config.yaml"]
    assert "pw" not in text.split() and "PEM" not in text
    config = parse_config(text)
    assert config.rate_limit is not None
    backend = config.rate_limit.backend
    assert backend.redis_url_file is None and backend.key_prefix == "team:rl:"
    assert backend.redis is not None and backend.connection() == backend.redis
    assert backend.redis.mode == "cluster"
    assert backend.redis.nodes == ["redis-0.redis:6379", "redis-1.redis:6379"]
    assert backend.redis.username == "sentient"
    assert backend.redis.password_file == "ratelimit-redis-password"
    assert backend.redis.tls.enabled and backend.redis.tls.ca_file == "ratelimit-redis-ca.pem"
    session_redis = config.sessions.redis
    assert session_redis is not None and config.sessions.redis_url_file is None
    assert session_redis.mode == "sentinel" and session_redis.master_name == "m"
    assert session_redis.sentinels == ["s-0:26379", "s-1:26379"]
    assert session_redis.password_file is None and not session_redis.tls.enabled


def test_standalone_redis_renders_as_before() -> None:
    """A standalone policy keeps the URL-file form: the same config text, so no rollout on upgrade."""
    spec = RateLimitPolicySpec.model_validate(
        {
            "limits": {"requestsPerMinute": 60},
            "backend": {"type": "redis", "redis": {"addressSecretRef": {"name": "redis", "key": "url"}}},
        }
    )
    policy = ResolvedPolicy(namespace="team", name="std", spec=spec, redis_url="redis://r:6379/0")
    text = config_map(replace(make_inputs(rateLimitPolicyRef={"name": "std"}), policy=policy))["data"][
        "config.yaml"
    ]
    backend = parse_config(text).rate_limit.backend  # type: ignore[union-attr]
    assert backend.redis is None and backend.redis_url_file == "ratelimit-redis-url"
    assert "mode:" not in text


def test_build_children_renders_the_config_once_and_uses_a_given_rendering() -> None:
    inputs = make_inputs()
    rendered = render_config(inputs)
    assert build_children(inputs, rendered) == build_children(inputs)
    # What it is given is what goes into the ConfigMap and the pod template (no second render).
    wanted, _ = build_children(inputs, ("marker: 1\n", "feedface"))
    by_kind = {obj["kind"]: obj for obj in wanted}
    assert next(iter(by_kind["ConfigMap"]["data"].values())) == "marker: 1\n"
    annotations = by_kind["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations[CONFIG_HASH_ANNOTATION] == "feedface"


AUDIT_SPEC: dict[str, Any] = {
    "sinks": [
        {
            "name": "rsyslog",
            "syslog": {
                "address": "rsyslog.logging:6514",
                "tls": {"caSecretRef": {"name": "siem", "key": "ca.crt"}},
            },
            "maxBufferMiB": 100,
        },
        {
            "name": "splunk",
            "http": {"url": "https://splunk:8088", "tokenSecretRef": {"name": "hec", "key": "t"}},
        },
    ]
}


def test_audit_sinks_render_config_files_and_a_spool_volume() -> None:
    inputs = replace(
        make_inputs(audit=AUDIT_SPEC, server={"workers": 2}),
        audit_sink_files={
            "audit-sink-rsyslog-ca.pem": "-----CA-----",
            "audit-sink-splunk-token": "hec-secret",
        },
    )
    text = config_map(inputs)["data"]["config.yaml"]
    assert "hec-secret" not in text and "-----CA-----" not in text
    audit = parse_config(text).audit
    assert audit is not None and audit.spool_dir == DEFAULT_AUDIT_SPOOL_DIR
    syslog, http = audit.sinks[0].syslog, audit.sinks[1].http
    assert syslog is not None and syslog.tls is not None and syslog.tls.ca_file == "audit-sink-rsyslog-ca.pem"
    assert (
        http is not None
        and http.token_file == "audit-sink-splunk-token"
        and http.sourcetype == "sentient:audit"
    )
    assert audit.sinks[0].max_buffer_bytes == 100 * 1024 * 1024
    bound = secret_data(credentials_secret(inputs))
    assert (
        bound["audit-sink-splunk-token"] == "hec-secret"
        and bound["audit-sink-rsyslog-ca.pem"] == "-----CA-----"
    )
    pod = deployment(inputs)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert {"name": "audit-spool", "mountPath": DEFAULT_AUDIT_SPOOL_DIR} in container["volumeMounts"]
    # Both caps, once per worker, plus a margin: the kubelet never evicts for a full spool.
    assert {"name": "audit-spool", "emptyDir": {"sizeLimit": f"{(100 + 64) * 2 + 16}Mi"}} in pod["volumes"]


def test_audit_spool_on_a_pvc_and_no_volume_without_sinks() -> None:
    inputs = make_inputs(audit={**AUDIT_SPEC, "spool": {"persistentVolumeClaim": "helper-audit"}})
    volumes = deployment(inputs)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "audit-spool", "persistentVolumeClaim": {"claimName": "helper-audit"}} in volumes
    plain = deployment(make_inputs())["spec"]["template"]["spec"]
    assert all(v["name"] != "audit-spool" for v in plain["volumes"])
    assert parse_config(config_map(make_inputs())["data"]["config.yaml"]).audit is None


def test_response_cache_is_off_unless_enabled_and_rendered_when_it_is() -> None:
    assert parse_config(config_map(make_inputs())["data"]["config.yaml"]).cache is None
    kept_off = make_inputs(cache={"ttl": "1m"})
    assert parse_config(config_map(kept_off)["data"]["config.yaml"]).cache is None
    memory = make_inputs(cache={"enabled": True, "ttl": "90s", "scope": "principal", "maxEntries": 10})
    cache = parse_config(config_map(memory)["data"]["config.yaml"]).cache
    assert cache is not None
    assert (cache.backend, cache.ttl, cache.scope, cache.max_entries) == ("memory", "90s", "principal", 10)
    assert cache.redis is None


def test_response_cache_redis_renders_its_files() -> None:
    standalone = replace(
        make_inputs(
            cache={
                "enabled": True,
                "backend": "redis",
                "redis": {"addressSecretRef": {"name": "r", "key": "url"}},
            }
        ),
        cache_redis_files={"cache-redis-url": "redis://:pw@cache:6379/0"},
    )
    assert secret_data(credentials_secret(standalone))["cache-redis-url"] == "redis://:pw@cache:6379/0"
    cache = parse_config(config_map(standalone)["data"]["config.yaml"]).cache
    assert cache is not None and cache.redis is not None
    assert (cache.redis.mode, cache.redis.url_file) == ("standalone", "cache-redis-url")
    cluster = make_inputs(
        cache={
            "enabled": True,
            "backend": "redis",
            "redis": {
                "mode": "cluster",
                "cluster": {"nodes": ["redis-0:6379"]},
                "passwordSecretRef": {"name": "r", "key": "pw"},
            },
        }
    )
    cache = parse_config(config_map(cluster)["data"]["config.yaml"]).cache
    assert cache is not None and cache.redis is not None
    assert (cache.redis.mode, cache.redis.nodes, cache.redis.password_file) == (
        "cluster",
        ["redis-0:6379"],
        "cache-redis-password",
    )


def test_prices_and_spend_budgets_are_rendered_into_the_runtime_config() -> None:
    inputs = make_inputs()
    priced = LLMProviderSpec.model_validate(
        {
            "type": "openai",
            "credentials": {"secretRef": {"name": "openai-key", "key": "apiKey"}},
            "pricing": {
                "currency": "EUR",
                "models": [{"model": "gpt-4o-mini", "inputPerMillion": "0.15", "outputPerMillion": "0.60"}],
                "default": {"inputPerMillion": "5", "outputPerMillion": "15"},
            },
        }
    )
    policy = ResolvedPolicy(
        namespace="team",
        name="spend",
        spec=RateLimitPolicySpec.model_validate(
            {
                "budgets": [
                    {"name": "keys", "per": "apiKey", "tiers": ["free"], "currency": "EUR", "perDay": "2.5"}
                ]
            }
        ),
    )
    provider = replace(inputs.providers[0], spec=priced)
    config = parse_config(render_config(replace(inputs, providers=[provider], policy=policy))[0])
    price = config.llm.chain[0].price
    assert price is not None and price.to_wire() == {
        "currency": "EUR",
        "inputPerMillion": "0.15",
        "outputPerMillion": "0.60",
    }
    # A model not listed takes the default price.
    other = parse_config(
        render_config(replace(inputs, providers=[replace(provider, model="gpt-4o")], policy=policy))[0]
    )
    assert other.llm.chain[0].price is not None and other.llm.chain[0].price.input_per_million == "5"
    assert config.rate_limit is not None and config.rate_limit.limits.is_empty()
    assert [b.to_wire() for b in config.rate_limit.budgets] == [
        {"name": "keys", "per": "apiKey", "tiers": ["free"], "currency": "EUR", "perDay": "2.5"}
    ]
    # Without pricing nothing is rendered: an unchanged provider renders as before.
    assert parse_config(render_config(inputs)[0]).llm.chain[0].price is None


def test_tracing_is_rendered_and_its_headers_bound() -> None:
    tracing = {
        "endpoint": "https://otel.example:4318",
        "samplingRatio": 0.25,
        "captureContent": True,
        "headersSecretRef": {"name": "otel-auth"},
    }
    inputs = replace(make_inputs(tracing=tracing), tracing_headers='{"authorization":"Bearer t0ken"}')
    text = config_map(inputs)["data"]["config.yaml"]
    config = parse_config(text).tracing
    assert config is not None
    assert (config.endpoint, config.sampling_ratio, config.capture_content) == (
        "https://otel.example:4318",
        0.25,
        True,
    )
    assert config.headers_file == TRACING_HEADERS_FILE
    assert "t0ken" not in text
    assert secret_data(credentials_secret(inputs))[TRACING_HEADERS_FILE] == '{"authorization":"Bearer t0ken"}'
    # Off by default: no tracing section, no headers file.
    assert parse_config(config_map(make_inputs())["data"]["config.yaml"]).tracing is None
    assert TRACING_HEADERS_FILE not in secret_data(credentials_secret(make_inputs()))
