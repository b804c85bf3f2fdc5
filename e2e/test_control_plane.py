"""The control plane is real: controllers, scheduler, fake kubelets, auth, admission, helm.

These run unchanged against the local control plane and against ``E2E_KUBECONFIG`` (kind).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from e2e.cluster import Cluster
from tests.support.waiting import wait_for

# Preloaded on kind nodes; never pulled on the local control plane (kwok fakes the kubelet).
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "main",
                            "image": PAUSE_IMAGE,
                            "ports": [{"name": "http", "containerPort": 8080}],
                        }
                    ],
                },
            },
        },
    }


def _plain(obj: Any) -> Any:
    """An API object as the JSON the apiserver sent (camelCase dicts): no Optional juggling."""
    return _serializer().sanitize_for_serialization(obj)


@functools.cache
def _serializer() -> client.ApiClient:
    return client.ApiClient()


def _ready_pods(core: client.CoreV1Api, ns: str, selector: str) -> list[dict[str, Any]]:
    pods = _plain(core.list_namespaced_pod(ns, label_selector=selector))["items"]
    return [
        p
        for p in pods
        if p["status"].get("phase") == "Running"
        and "deletionTimestamp" not in p["metadata"]
        and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    ]


def _apply(cluster: Cluster, ns: str, *objects: dict[str, Any]) -> None:
    doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=doc)


def test_version_reports_the_built_release(cluster: Cluster) -> None:
    info = json.loads(cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]
    if cluster.local is not None:
        assert info["gitVersion"] == "v1.35.4"
    assert info["major"] == "1"


def test_deployment_pods_become_ready_and_service_gets_endpointslices(
    cluster: Cluster, k8s: client.ApiClient, namespace: str
) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }
    _apply(cluster, namespace, _deployment("web", 2), service)
    core = client.CoreV1Api(k8s)
    pods = wait_for(
        lambda: (ready := _ready_pods(core, namespace, "app=web")) and len(ready) == 2 and ready,
        timeout=90,
        what="2 pods Running and Ready",
    )
    nodes = {n["metadata"]["name"] for n in _plain(core.list_node())["items"]}
    assert {p["spec"]["nodeName"] for p in pods} <= nodes
    pod_ips = {p["status"].get("podIP") for p in pods}
    assert all(pod_ips)

    discovery = client.DiscoveryV1Api(k8s)

    def ready_endpoint_ips() -> set[str]:
        slices = _plain(
            discovery.list_namespaced_endpoint_slice(
                namespace, label_selector="kubernetes.io/service-name=web"
            )
        )["items"]
        return {
            addr
            for s in slices
            for e in s.get("endpoints") or []
            if e.get("conditions", {}).get("ready")
            for addr in e["addresses"]
        }

    wait_for(lambda: ready_endpoint_ips() == pod_ips, timeout=60, what="EndpointSlices with both pod IPs")
    apps = client.AppsV1Api(k8s)
    wait_for(
        lambda: (
            _plain(apps.read_namespaced_deployment_status("web", namespace))["status"].get(
                "availableReplicas"
            )
            == 2
        ),
        timeout=60,
        what="Deployment Available",
    )


def test_a_running_pod_marked_not_ready_by_the_node_controller_becomes_ready_again(
    cluster: Cluster, k8s: client.ApiClient, namespace: str
) -> None:
    """What a kubelet does after a node's lease lapsed (an apiserver or etcd outage): the node
    lifecycle controller set its pods Ready=False; the kubelet writes their readiness again.
    Without it, every Deployment on the node stayed unavailable after the outage."""
    _apply(cluster, namespace, _deployment("relapse", 1))
    core = client.CoreV1Api(k8s)
    (pod,) = wait_for(lambda: _ready_pods(core, namespace, "app=relapse"), timeout=90, what="a ready pod")
    name = pod["metadata"]["name"]
    # Exactly the node lifecycle controller's MarkPodsNotReady write.
    not_ready = [{**c, "status": "False"} if c["type"] == "Ready" else c for c in pod["status"]["conditions"]]
    core.patch_namespaced_pod_status(name, namespace, {"status": {"conditions": not_ready}})
    assert name not in {p["metadata"]["name"] for p in _ready_pods(core, namespace, "app=relapse")}
    wait_for(
        lambda: name in {p["metadata"]["name"] for p in _ready_pods(core, namespace, "app=relapse")},
        timeout=60,
        what="the same pod Ready again",
    )


def test_deleting_deployment_garbage_collects_replicaset_and_pods(
    cluster: Cluster, k8s: client.ApiClient, namespace: str
) -> None:
    _apply(cluster, namespace, _deployment("gc", 2))
    core = client.CoreV1Api(k8s)
    apps = client.AppsV1Api(k8s)
    wait_for(lambda: len(_ready_pods(core, namespace, "app=gc")) == 2, timeout=90, what="2 ready pods")
    replicasets = _plain(apps.list_namespaced_replica_set(namespace, label_selector="app=gc"))["items"]
    assert len(replicasets) == 1
    owner = replicasets[0]["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("Deployment", "gc")

    # Background propagation: the apiserver deletes the Deployment at once, the garbage
    # collector in kube-controller-manager then removes the dependents.
    apps.delete_namespaced_deployment("gc", namespace, propagation_policy="Background")
    wait_for(
        lambda: not apps.list_namespaced_replica_set(namespace, label_selector="app=gc").items,
        timeout=60,
        what="the ReplicaSet to be garbage-collected",
    )
    wait_for(
        lambda: not core.list_namespaced_pod(namespace, label_selector="app=gc").items,
        timeout=60,
        what="the pods to be deleted",
    )


def test_serviceaccount_token_authenticates_and_rbac_limits_it(
    cluster: Cluster, k8s: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(k8s)
    rbac = client.RbacAuthorizationV1Api(k8s)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="configmap-reader"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["get", "list"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="reader"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="configmap-reader"
            ),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)],
        ),
    )
    token: str = _plain(
        core.create_namespaced_service_account_token(
            "reader",
            namespace,
            client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])),
        )
    )["status"]["token"]

    auth = client.AuthenticationV1Api(k8s)
    review = _plain(
        auth.create_token_review(client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token)))
    )
    assert review["status"]["authenticated"] is True
    assert review["status"]["user"]["username"] == f"system:serviceaccount:{namespace}:reader"

    # A client that carries only the token (no client certificate of the admin).
    cfg = copy.deepcopy(k8s.configuration)
    cfg.cert_file = None
    cfg.key_file = None
    cfg.api_key = {"authorization": f"Bearer {token}"}
    cfg.api_key_prefix = {}
    with client.ApiClient(cfg) as as_reader:
        reader = client.CoreV1Api(as_reader)
        reader.list_namespaced_config_map(namespace)  # granted by the Role
        with pytest.raises(ApiException) as denied:
            reader.list_namespaced_secret(namespace)
        assert denied.value.status == 403
        with pytest.raises(ApiException) as denied_write:
            reader.create_namespaced_config_map(
                namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="nope"))
            )
        assert denied_write.value.status == 403

    # A token whose signature does not verify is not authenticated.
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    bad = _plain(auth.create_token_review(client.V1TokenReview(spec=client.V1TokenReviewSpec(token=forged))))
    assert not bad["status"].get("authenticated")


def test_restricted_namespace_rejects_privileged_pod(k8s: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(k8s)
    core.patch_namespace(
        namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )

    privileged = client.V1Pod(
        metadata=client.V1ObjectMeta(name="privileged"),
        spec=client.V1PodSpec(
            containers=[
                client.V1Container(
                    name="main",
                    image=PAUSE_IMAGE,
                    security_context=client.V1SecurityContext(privileged=True),
                )
            ]
        ),
    )
    with pytest.raises(ApiException) as rejected:
        core.create_namespaced_pod(namespace, privileged)
    assert rejected.value.status == 403
    assert "violates PodSecurity" in str(rejected.value.body)

    # The same namespace admits a pod that meets the restricted profile: the rejection above
    # is PodSecurity's judgement, not a blanket refusal.
    compliant = client.V1Pod(
        metadata=client.V1ObjectMeta(name="compliant"),
        spec=client.V1PodSpec(
            security_context=client.V1PodSecurityContext(
                run_as_non_root=True,
                run_as_user=65532,
                seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
            ),
            containers=[
                client.V1Container(
                    name="main",
                    image=PAUSE_IMAGE,
                    security_context=client.V1SecurityContext(
                        allow_privilege_escalation=False,
                        capabilities=client.V1Capabilities(drop=["ALL"]),
                    ),
                )
            ],
        ),
    )
    core.create_namespaced_pod(namespace, compliant, dry_run="All")


def test_helm_install_and_uninstall_tiny_chart(
    cluster: Cluster, k8s: client.ApiClient, namespace: str
) -> None:
    chart = str(Path(__file__).resolve().parent / "testdata" / "tiny-chart")
    cluster.helm(
        "install", "tiny", chart, "-n", namespace, "--wait", "--timeout", "60s", "--set", "message=hi"
    )
    core = client.CoreV1Api(k8s)
    cm = core.read_namespaced_config_map("tiny-tiny", namespace)
    assert cm.data == {"message": "hi"}
    releases = json.loads(cluster.helm("list", "-n", namespace, "-o", "json").stdout)
    assert [(r["name"], r["status"]) for r in releases] == [("tiny", "deployed")]

    cluster.helm("uninstall", "tiny", "-n", namespace, "--wait", "--timeout", "60s")
    assert json.loads(cluster.helm("list", "-n", namespace, "-o", "json").stdout) == []
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_config_map("tiny-tiny", namespace)
    assert gone.value.status == 404
    assert not core.list_namespaced_service_account(
        namespace, label_selector="app.kubernetes.io/instance=tiny"
    ).items


def test_project_crds_are_established_and_served(cluster: Cluster, crds: list[str]) -> None:
    assert crds, "the crds fixture returned no CRD names"
    for name in crds:
        crd = json.loads(cluster.kubectl("get", "crd", name, "-o", "json").stdout)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", name
        plural, group = crd["spec"]["names"]["plural"], crd["spec"]["group"]
        # The API is served: listing the (empty) resource works.
        cluster.kubectl("get", f"{plural}.{group}", "-A")


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited already


@pytest.mark.slow
def test_cluster_command_up_env_down_leaves_nothing_behind(tmp_path: Path) -> None:
    if os.environ.get("E2E_KUBECONFIG"):
        pytest.skip("the command starts the local control plane; not under E2E_KUBECONFIG")
    repo = Path(__file__).resolve().parent.parent
    run_dir = tmp_path / "run"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "e2e.cluster", *args, "--run-dir", str(run_dir)],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )

    up = cli("up")
    pids: dict[str, int] = {}
    try:
        assert up.returncode == 0, up.stderr
        kubeconfig = run_dir / "kubeconfig"
        assert f"export KUBECONFIG={kubeconfig}" in up.stdout
        assert cli("env").stdout == up.stdout
        pids = json.loads((run_dir / "state.json").read_text())["pids"]
        assert set(pids) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}
        handle = Cluster.from_kubeconfig(str(kubeconfig))
        nodes = handle.kubectl("get", "nodes", "-o", "name").stdout.split()
        assert nodes == ["node/kwok-node-0", "node/kwok-node-1"]
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stderr
    assert not run_dir.exists()
    wait_for(
        lambda: not [n for n, pid in pids.items() if _running(pid)],
        timeout=30,
        what="every component to exit",
    )
    assert cli("env").returncode == 1
