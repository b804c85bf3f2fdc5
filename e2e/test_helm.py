"""The Helm chart on a real control plane: install, helm test, upgrade, uninstall, schema.

On the local control plane kwok fakes the pods (Running, Ready, and Succeeded
for the ``helm test`` Pod), so these tests prove what the API server and Helm
do with the chart: objects accepted, the Deployment rolled out and Ready, CRDs
Established, RBAC objects valid, nothing left behind but the CRDs. Under
``E2E_KUBECONFIG`` (kind) the same tests run with real pods.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.cluster import Cluster, CommandError
from tests.support.waiting import wait_for

CHART = Path(__file__).resolve().parent.parent / "charts" / "sentient-operator"
CRD_NAMES = (
    "sentientagents.sentient.dev",
    "llmproviders.sentient.dev",
    "ratelimitpolicies.sentient.dev",
)
# Namespaced and cluster-scoped kinds a release may create; checked after uninstall.
NAMESPACED_KINDS = (
    "deployments,replicasets,pods,services,serviceaccounts,configmaps,secrets,roles,rolebindings"
)
CLUSTER_KINDS = "clusterroles,clusterrolebindings"


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


class Release:
    """One Helm release of the chart in its own namespace."""

    def __init__(self, cluster: Cluster, name: str, namespace: str) -> None:
        self.cluster = cluster
        self.name = name
        self.namespace = namespace

    @property
    def fullname(self) -> str:
        """The chart's full name for this release (the release name contains no 'sentient-operator')."""
        return f"{self.name}-sentient-operator"

    def helm(self, *args: str, check: bool = True) -> Any:
        """Run a helm command scoped to the release namespace."""
        return self.cluster.helm(*args, "--namespace", self.namespace, check=check, timeout=240)

    def install(self, *values: str, wait: bool = True, check: bool = True) -> Any:
        """``helm install`` with ``--set`` pairs (and ``--wait`` for the rollout)."""
        args = ["install", self.name, str(CHART), "--create-namespace"]
        for v in values:
            args += ["--set", v]
        if wait:
            args += ["--wait", "--timeout", "180s"]
        return self.helm(*args, check=check)

    def kubectl_json(self, *args: str) -> dict[str, Any]:
        """``kubectl get ... -o json`` in the release namespace."""
        out = self.cluster.kubectl("get", *args, "-n", self.namespace, "-o", "json").stdout
        data: dict[str, Any] = json.loads(out)
        return data

    def leftovers(self) -> list[str]:
        """Objects of this release still present (namespaced and cluster-scoped)."""
        selector = f"app.kubernetes.io/instance={self.name}"
        found = self.cluster.kubectl(
            "get", NAMESPACED_KINDS, "-n", self.namespace, "-l", selector, "-o", "name"
        )
        found_cluster = self.cluster.kubectl("get", CLUSTER_KINDS, "-l", selector, "-o", "name")
        # Helm's own release records (Secrets owned by helm, named after the release).
        records = self.cluster.kubectl(
            "get", "secrets", "-n", self.namespace, "-l", f"owner=helm,name={self.name}", "-o", "name"
        )
        return [line for p in (found, found_cluster, records) for line in p.stdout.split() if line]

    def uninstall(self) -> None:
        """``helm uninstall`` and wait for the deletions."""
        self.helm("uninstall", self.name, "--wait", "--timeout", "120s", check=False)

    def delete_namespace(self) -> None:
        """Remove the release namespace (without waiting)."""
        self.cluster.kubectl(
            "delete", "namespace", self.namespace, "--wait=false", "--ignore-not-found", check=False
        )


@pytest.fixture(scope="module")
def release(cluster: Cluster) -> Iterator[Release]:
    """The chart installed once, shared by the tests of the happy path.

    It serves only its own namespace: where pods really run (kind), an operator
    serving the whole cluster would act on the objects of concurrent tests.
    """
    rel = Release(cluster, _name("so"), _name("e2e-helm"))
    rel.install(f"operator.watchNamespaces={{{rel.namespace}}}")
    try:
        yield rel
    finally:
        rel.uninstall()
        rel.delete_namespace()


def _env(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


def _can(cluster: Cluster, service_account: str, verb: str, resource: str, *extra: str) -> bool:
    """``kubectl auth can-i`` as a ServiceAccount: the API server's own authorizer decides."""
    proc = cluster.kubectl("auth", "can-i", verb, resource, "--as", service_account, *extra, check=False)
    return proc.stdout.strip() == "yes"


def test_install_rolls_out_the_operator_and_establishes_the_crds(release: Release) -> None:
    status = json.loads(release.helm("status", release.name, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    assert f"kubectl apply -n {release.namespace} -f - <<'EOF'" in status["info"]["notes"]

    deployment = release.kubectl_json("deployment", release.fullname)
    assert deployment["status"].get("readyReplicas") == 1
    assert deployment["status"].get("updatedReplicas") == 1
    pod_spec = deployment["spec"]["template"]["spec"]
    assert pod_spec["serviceAccountName"] == release.fullname
    assert pod_spec["securityContext"]["runAsNonRoot"] is True

    for crd in CRD_NAMES:
        release.cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}")

    sa = f"system:serviceaccount:{release.namespace}:{release.fullname}"
    ns = ("-n", release.namespace)
    assert _can(release.cluster, sa, "watch", "sentientagents.sentient.dev", *ns)
    assert _can(release.cluster, sa, "patch", "deployments.apps", *ns)
    # A Role in the watched namespace, nothing elsewhere.
    assert not _can(release.cluster, sa, "watch", "sentientagents.sentient.dev", "-n", "default")
    assert not _can(release.cluster, sa, "list", "secrets", "-n", "default")
    assert _can(release.cluster, sa, "update", f"leases/{release.fullname}", *ns)
    assert not _can(release.cluster, sa, "update", "leases/someone-else", *ns)


def test_cluster_wide_rbac_as_the_service_account(cluster: Cluster) -> None:
    # No operator pod (replicaCount=0): only the cluster-wide RBAC is under test here.
    rel = Release(cluster, _name("cw"), _name("e2e-helm-cw"))
    try:
        rel.install("replicaCount=0", "tests.enabled=false", wait=False)
        sa = f"system:serviceaccount:{rel.namespace}:{rel.fullname}"
        assert _can(cluster, sa, "watch", "sentientagents.sentient.dev", "--all-namespaces")
        assert _can(
            cluster, sa, "patch", "sentientagents.sentient.dev", "--subresource=status", "-n", "default"
        )
        assert _can(cluster, sa, "create", "deployments.apps", "-n", "default")
        assert _can(
            cluster,
            sa,
            "create",
            f"serviceaccounts/{rel.fullname}",
            "--subresource=token",
            "-n",
            rel.namespace,
        )
        assert not _can(cluster, sa, "create", "serviceaccounts", "--subresource=token", "-n", "default")
        assert _can(cluster, sa, "delete", "horizontalpodautoscalers.autoscaling", "-n", "default")
        assert _can(cluster, sa, "get", "secrets/sentient-operator-fingerprint-key", "-n", rel.namespace)
        # Nothing beyond what the operator uses.
        assert not _can(cluster, sa, "patch", "sentientagents.sentient.dev", "-n", "default")
        assert not _can(cluster, sa, "delete", "deployments.apps", "-n", "default")
        assert not _can(cluster, sa, "create", "pods", "-n", "default")
        assert not _can(cluster, sa, "list", "namespaces")
        assert not _can(cluster, sa, "delete", "customresourcedefinitions")
        assert not _can(cluster, sa, "create", "clusterroles")
        assert not _can(cluster, sa, "update", "leases/someone-else", "-n", rel.namespace)
    finally:
        rel.uninstall()
        rel.delete_namespace()


def test_helm_test_hook_passes(release: Release) -> None:
    # The Job's pod calls the operator's /healthz through the metrics Service (kwok
    # completes it on the local control plane; under kind it really calls).
    proc = release.helm("test", release.name, "--timeout", "120s")
    assert "Succeeded" in proc.stdout, proc.stdout


def test_upgrade_applies_changed_values(release: Release, cluster: Cluster) -> None:
    watched = _name("e2e-watched")
    cluster.kubectl("create", "namespace", watched)
    try:
        release.helm(
            "upgrade",
            release.name,
            str(CHART),
            "--reuse-values",
            "--set",
            "replicaCount=2",
            "--set",
            "operator.logLevel=debug",
            "--set",
            f"operator.watchNamespaces={{{watched}}}",
            "--wait",
            "--timeout",
            "180s",
        )
        deployment = release.kubectl_json("deployment", release.fullname)
        assert deployment["spec"]["replicas"] == 2
        assert deployment["status"].get("readyReplicas") == 2
        env = _env(deployment)
        assert env["SENTIENT_LOG_LEVEL"] == "debug"
        assert env["SENTIENT_WATCH_NAMESPACES"] == watched

        # RBAC followed: a Role in the newly watched namespace, none left in the old one.
        role = json.loads(
            cluster.kubectl("get", "role", release.fullname, "-n", watched, "-o", "json").stdout
        )
        assert any("sentientagents" in r["resources"] for r in role["rules"])
        gone = cluster.kubectl("get", "role", release.fullname, "-n", release.namespace, check=False)
        assert gone.returncode != 0 and "NotFound" in gone.stderr

        history = json.loads(release.helm("history", release.name, "-o", "json").stdout)
        assert [h["status"] for h in history][-1] == "deployed"
        assert len(history) == 2
    finally:
        # Back to where the module's release started.
        release.helm(
            "upgrade",
            release.name,
            str(CHART),
            "--reset-values",
            "--set",
            f"operator.watchNamespaces={{{release.namespace}}}",
            "--wait",
            "--timeout",
            "180s",
        )
        cluster.kubectl("delete", "namespace", watched, "--wait=false", check=False)


def test_uninstall_leaves_nothing_but_the_crds(cluster: Cluster) -> None:
    rel = Release(cluster, _name("gone"), _name("e2e-helm-gone"))
    watched = _name("e2e-helm-watched")
    cluster.kubectl("create", "namespace", watched)
    try:
        rel.install(f"operator.watchNamespaces={{{watched}}}", "podDisruptionBudget.enabled=true")
        assert rel.leftovers(), "the install created nothing?"
        selector = f"app.kubernetes.io/instance={rel.name}"
        assert cluster.kubectl("get", "roles", "-n", watched, "-l", selector, "-o", "name").stdout.strip()
        proc = rel.helm("uninstall", rel.name, "--wait", "--timeout", "120s")
        assert "uninstalled" in proc.stdout
        # Helm waits for what it deleted; the garbage collector then removes the
        # ReplicaSet and its pods, a moment later.
        wait_for(
            lambda: rel.leftovers() == [], timeout=60, interval=1, what=f"no objects of release {rel.name}"
        )
        pdbs = cluster.kubectl("get", "pdb", "-n", rel.namespace, "-l", selector, "-o", "name")
        assert pdbs.stdout.strip() == ""
        roles = cluster.kubectl("get", "roles,rolebindings", "-n", watched, "-l", selector, "-o", "name")
        assert roles.stdout.strip() == ""
        # Helm never deletes CRDs (or the custom resources in them): they stay, as the NOTES say.
        for crd in CRD_NAMES:
            cluster.kubectl("get", "crd", crd)
    finally:
        rel.delete_namespace()
        cluster.kubectl("delete", "namespace", watched, "--wait=false", check=False)


def test_bad_values_are_rejected_by_the_schema(cluster: Cluster, tmp_path: Path) -> None:
    rel = Release(cluster, _name("bad"), _name("e2e-helm-bad"))
    bad = tmp_path / "bad-values.yaml"
    bad.write_text(
        yaml.safe_dump({"replicaCount": "three", "operator": {"logLevel": "loud", "watchNamespace": []}})
    )
    try:
        with pytest.raises(CommandError) as failure:
            rel.helm("install", rel.name, str(CHART), "--create-namespace", "--values", str(bad))
        message = failure.value.stderr
        assert "values don't meet the specifications of the schema" in message
        assert "/replicaCount" in message
        assert "/operator/logLevel" in message
        assert "watchNamespace" in message  # the misspelt key is named
        # Nothing was installed.
        assert rel.helm("status", rel.name, check=False).returncode != 0
    finally:
        rel.delete_namespace()


def test_service_monitor_mode_always_fails_clearly_without_prometheus_operator(cluster: Cluster) -> None:
    served = cluster.kubectl("api-resources", "--api-group=monitoring.coreos.com", "-o", "name").stdout
    if "servicemonitors" in served:
        pytest.skip("this cluster serves monitoring.coreos.com: mode=always would succeed")
    rel = Release(cluster, _name("sm"), _name("e2e-helm-sm"))
    try:
        with pytest.raises(CommandError) as failure:
            rel.install("serviceMonitor.mode=always", "replicaCount=0", wait=False)
        assert 'serviceMonitor.mode is "always" but the cluster does not serve' in failure.value.stderr
        # mode=auto (the default) installs without one and the NOTES say why.
        proc = rel.install(f"operator.watchNamespaces={{{rel.namespace}}}", wait=False)
        assert "does not serve monitoring.coreos.com/v1 ServiceMonitor" in proc.stdout
    finally:
        with contextlib.suppress(CommandError):
            rel.uninstall()
        rel.delete_namespace()


def test_watch_namespaces_that_do_not_exist_fail_before_anything_is_installed(cluster: Cluster) -> None:
    rel = Release(cluster, _name("wn"), _name("e2e-helm-wn"))
    missing = _name("e2e-nosuch")
    try:
        with pytest.raises(CommandError) as failure:
            rel.install(
                f"operator.watchNamespaces={{{rel.namespace},{missing}}}", "replicaCount=0", wait=False
            )
        message = failure.value.stderr
        assert f"operator.watchNamespaces names namespaces that do not exist: {missing}." in message
        assert f"kubectl create namespace {missing}" in message
        assert rel.namespace not in message.split("do not exist:", 1)[1].splitlines()[0]
        # Refused while rendering: no failed release is left for `helm install` to trip over.
        listed = cluster.helm("list", "-n", rel.namespace, "-q").stdout.split()  # every status
        assert rel.name not in listed
    finally:
        with contextlib.suppress(CommandError):
            rel.uninstall()
        rel.delete_namespace()


# ------------------------------------------------------------------------------ RBAC is sufficient and minimal


def _token_kubeconfig(cluster: Cluster, namespace: str, service_account: str, path: Path) -> str:
    """A kubeconfig that authenticates as ``service_account`` with a TokenRequest token."""
    token = cluster.kubectl(
        "create", "token", service_account, "-n", namespace, "--duration=3600s"
    ).stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "e2e",
                "cluster": {
                    "server": cluster.server,
                    "certificate-authority-data": base64.b64encode(cluster.ca_pem.encode()).decode(),
                },
            }
        ],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "e2e", "user": service_account}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    return str(path)


class _AsServiceAccount:
    """What ``running_operator`` needs of a cluster: the SA's kubeconfig for the operator,
    the admin's kubectl for the test's own clean-up."""

    def __init__(self, cluster: Cluster, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig
        self.kubectl = cluster.kubectl


@pytest.fixture
def rbac_release(cluster: Cluster, crds: list[str], namespace: str) -> Iterator[Release]:
    """The chart installed to serve only ``namespace`` (Roles there, its own namespace apart)."""
    rel = Release(cluster, _name("rbac"), _name("e2e-helm-op"))
    # No operator pod: the test runs the operator itself, as this ServiceAccount (where
    # pods really run, a pod of the chart would compete for the same Lease).
    rel.install(
        f"operator.watchNamespaces={{{namespace}}}", "replicaCount=0", "tests.enabled=false", wait=False
    )
    try:
        yield rel
    finally:
        rel.uninstall()
        rel.delete_namespace()


def _forbidden_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if "forbidden" in line.lower() or " 403" in line]


def test_chart_rbac_suffices_for_the_full_agent_lifecycle(
    cluster: Cluster, rbac_release: Release, namespace: str, tmp_path: Path
) -> None:
    from agent_runtime.testing import run_fake
    from e2e.agents import PROVIDER_KEY, agent, callers, provider, wait_ready
    from e2e.operator_proc import running_operator
    from e2e.resources import apply, condition, get

    rel = rbac_release
    as_sa = _AsServiceAccount(
        cluster, _token_kubeconfig(cluster, rel.namespace, rel.fullname, tmp_path / "sa.kubeconfig")
    )
    who = cluster.kubectl(
        "--kubeconfig", as_sa.kubeconfig, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"
    )
    assert who.stdout == f"system:serviceaccount:{rel.namespace}:{rel.fullname}"

    with (
        run_fake("openai", api_key=PROVIDER_KEY) as fake,
        running_operator(
            as_sa,
            namespace,
            lease_namespace=rel.namespace,
            env={"SENTIENT_LEASE_NAME": rel.fullname},
            log_path=tmp_path / "operator.log",
        ) as op,
    ):
        # Create: provider, rate-limit policy, callers' keys, an agent with two replicas (-> PDB).
        policy = {
            "apiVersion": "sentient.dev/v1alpha1",
            "kind": "RateLimitPolicy",
            "metadata": {"name": "limits", "namespace": namespace},
            "spec": {"countBy": "apiKey", "limits": {"requestsPerMinute": 600}},
        }
        apply(
            cluster,
            *provider(namespace, fake.endpoint),
            policy,
            callers(namespace),
            agent(namespace, replicas=2, rateLimitPolicyRef={"name": "limits"}),
        )
        ready = wait_ready(cluster, namespace)
        old_hash = ready["status"]["configHash"]
        for kind, name in [
            ("configmap", "helper-config"),
            ("secret", "helper-credentials"),
            ("deployment", "helper"),
            ("service", "helper"),
            ("pdb", "helper"),
        ]:
            assert get(cluster, kind, name, namespace) is not None, f"{kind}/{name}"
        # Every kind's status was written with the SA's rights, and so were the provider
        # Secret and the fingerprint key.
        for kind, name in [("llmprovider", "fake"), ("ratelimitpolicy", "limits")]:
            written = get(cluster, kind, name, namespace) or {}
            assert (written.get("status") or {}).get("conditions"), f"{kind}/{name}: {written.get('status')}"
        assert get(cluster, "secret", "sentient-provider-fake", namespace) is not None
        assert get(cluster, "secret", "sentient-operator-fingerprint-key", rel.namespace) is not None

        # Update: a new prompt rolls out; autoscaling on (HPA created) and off (HPA deleted).
        cluster.kubectl(
            "patch", "sentientagent", "helper", "-n", namespace, "--type=merge",
            "-p", json.dumps({"spec": {"systemPrompt": "You are a changed agent.",
                                       "autoscaling": {"minReplicas": 2, "maxReplicas": 4}}}),
        )  # fmt: skip
        wait_for(
            lambda: (
                ((get(cluster, "sentientagent", "helper", namespace) or {}).get("status") or {}).get(
                    "configHash"
                )
                not in (None, old_hash)
            ),
            timeout=90,
            what="the changed prompt to be rendered",
        )
        wait_for(lambda: get(cluster, "hpa", "helper", namespace), timeout=60, what="the HPA")
        cluster.kubectl(
            "patch", "sentientagent", "helper", "-n", namespace, "--type=json",
            "-p", json.dumps([{"op": "remove", "path": "/spec/autoscaling"}]),
        )  # fmt: skip
        wait_for(lambda: get(cluster, "hpa", "helper", namespace) is None, timeout=60, what="the HPA to go")
        after = wait_ready(cluster, namespace)
        assert condition(after, "Degraded").get("status") == "False", after["status"]

        # Drift: a deleted child and an edited one are restored.
        cluster.kubectl("delete", "service", "helper", "-n", namespace)
        cluster.kubectl(
            "patch", "configmap", "helper-config", "-n", namespace, "--type=merge",
            "-p", json.dumps({"data": {"config.yaml": "tampered: true\n"}}),
        )  # fmt: skip
        wait_for(
            lambda: get(cluster, "service", "helper", namespace), timeout=60, what="the Service restored"
        )
        wait_for(
            lambda: (
                "tampered"
                not in ((get(cluster, "configmap", "helper-config", namespace) or {}).get("data") or {}).get(
                    "config.yaml", "tampered"
                )
            ),
            timeout=60,
            what="the ConfigMap restored",
        )

        # Delete: the children follow through garbage collection.
        cluster.kubectl("delete", "sentientagent", "helper", "-n", namespace, "--wait=true", "--timeout=60s")
        wait_for(
            lambda: get(cluster, "deployment", "helper", namespace) is None,
            timeout=90,
            what="the agent's Deployment to be collected",
        )
        assert _forbidden_lines(op.lines) == [], "\n".join(_forbidden_lines(op.lines))


def test_a_missing_rule_is_reported_clearly(
    cluster: Cluster, rbac_release: Release, namespace: str, tmp_path: Path
) -> None:
    from agent_runtime.testing import run_fake
    from e2e.agents import PROVIDER_KEY, agent, callers, provider
    from e2e.operator_proc import running_operator
    from e2e.resources import apply

    rel = rbac_release
    # Take the Deployment rule out of the Role the chart made for the watched namespace.
    role = json.loads(cluster.kubectl("get", "role", rel.fullname, "-n", namespace, "-o", "json").stdout)
    index = next(i for i, r in enumerate(role["rules"]) if r["resources"] == ["deployments"])
    cluster.kubectl(
        "patch", "role", rel.fullname, "-n", namespace, "--type=json",
        "-p", json.dumps([{"op": "remove", "path": f"/rules/{index}"}]),
    )  # fmt: skip
    as_sa = _AsServiceAccount(
        cluster, _token_kubeconfig(cluster, rel.namespace, rel.fullname, tmp_path / "sa.kubeconfig")
    )
    with (
        run_fake("openai", api_key=PROVIDER_KEY) as fake,
        running_operator(
            as_sa,
            namespace,
            lease_namespace=rel.namespace,
            env={"SENTIENT_LEASE_NAME": rel.fullname},
            log_path=tmp_path / "operator.log",
        ) as op,
    ):
        apply(cluster, *provider(namespace, fake.endpoint), callers(namespace), agent(namespace))
        # kopf cannot watch the agents' Deployments: it names the exact permission in
        # the log and, after its retries, the process stops (the pod would restart with
        # that message) rather than run half-blind.
        line = op.wait_for_log('cannot list resource \\"deployments\\" in API group \\"apps\\"', timeout=120)
        assert f"system:serviceaccount:{rel.namespace}:{rel.fullname}" in line
        assert "forbidden" in line
        # kopf gives up after its error backoffs (1+1+2+3+5+8+13+21 = 54 s) plus one request per
        # try; on a loaded machine that passed 60 s, so the bound leaves room for the requests.
        wait_for(lambda: not op.alive, timeout=150, what="the operator to stop")
        assert op.process is not None and op.process.returncode == 1, (
            f"a failed operator must exit non-zero:\n{op.tail()}"
        )


def test_plain_manifests_are_accepted_by_the_api_server(cluster: Cluster, namespace: str) -> None:
    # Server-side dry run: every object of manifests/install.yaml passes the API
    # server's validation and admission, without installing a second operator.
    from e2e import render_manifests

    docs = [d for d in yaml.safe_load_all(render_manifests.OUTPUT.read_text()) if d]
    assert docs[0]["kind"] == "Namespace"
    for doc in docs[1:]:
        if doc["metadata"].get("namespace") == render_manifests.NAMESPACE:
            doc["metadata"]["namespace"] = namespace
        for subject in doc.get("subjects", []):
            subject["namespace"] = namespace
    proc = cluster.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=sentient-e2e",
        "-f",
        "-",
        input=yaml.safe_dump_all(docs[1:]),
    )
    applied = proc.stdout.splitlines()
    assert len(applied) == len(docs) - 1, proc.stdout
    assert any("deployment.apps/sentient-operator" in line for line in applied), proc.stdout
