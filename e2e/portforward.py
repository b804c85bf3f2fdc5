"""``kubectl port-forward`` on the local control plane: point a fake pod's ports at a local address.

kwok plays the kubelet of the fake nodes; its server (started by ``e2e.cluster`` on
``LocalCluster.kubelet_port``) answers the apiserver's port-forward requests by looking up a
``PortForward`` object (``kwok.x-k8s.io/v1alpha1``) named after the pod, in the pod's namespace,
and tunnelling the stream to that object's target, e.g. the 127.0.0.1 port of an ``AgentPod``::

    forward_pods(cluster, namespace, "app.kubernetes.io/instance=helper", pod.port)
    # now `kubectl port-forward svc/helper :80` (and `sentient chat ns/helper`) reach the AgentPod

Each ``PortForward`` is owned by its pod (an ownerReference), so it goes away with the pod or the
namespace. kwok reads these objects through an informer: a forward created a moment before the
first connection is normally seen in time, but a connection that arrives first fails ("no forward
found"), and kubectl then exits with "lost connection to pod". Create forwards before starting
kubectl; ``http_through_port_forward`` retries with a fresh kubectl for exactly that reason.

Only on the local control plane (``cluster.local is not None``): on kind the pods really run.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from e2e import tools
from e2e.cluster import Cluster
from tests.support.waiting import wait_for

API_VERSION = "kwok.x-k8s.io/v1alpha1"
_FORWARDING = re.compile(r"^Forwarding from 127\.0\.0\.1:(\d+) -> \d+")


def forward_pod(
    cluster: Cluster,
    namespace: str,
    pod: dict[str, Any],
    port: int,
    *,
    address: str = "127.0.0.1",
    pod_ports: list[int] | None = None,
) -> str:
    """Make port-forwards to ``pod`` (a Pod object as a dict) reach ``address:port``.

    ``pod_ports``: only these container ports (default: every port of the pod). Applied, so a
    second call retargets the pod. Returns the PortForward's name (the pod's name).
    """
    name = str(pod["metadata"]["name"])
    forward: dict[str, Any] = {"target": {"address": address, "port": port}}
    if pod_ports:
        forward["ports"] = list(pod_ports)
    body = {
        "apiVersion": API_VERSION,
        "kind": "PortForward",
        "metadata": {
            # kwok matches a PortForward to a pod by name and namespace, nothing else.
            "name": name,
            "namespace": namespace,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": pod["metadata"]["uid"]}
            ],
        },
        "spec": {"forwards": [forward]},
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))
    return name


def running_pods(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    """Pods matching the label ``selector`` whose phase is Running (not being deleted)."""
    out = cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
    return [
        p
        for p in json.loads(out)["items"]
        if (p.get("status") or {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]


def forward_pods(
    cluster: Cluster,
    namespace: str,
    selector: str,
    port: int,
    *,
    address: str = "127.0.0.1",
    timeout: float = 60.0,
) -> list[str]:
    """Wait for Running pods matching ``selector`` and forward each to ``address:port``.

    Covers the pods that exist now: after a rollout (new pod names), call it again. Returns the
    names of the PortForward objects (= pod names).
    """
    pods = wait_for(
        lambda: running_pods(cluster, namespace, selector),
        timeout=timeout,
        what=f"a Running pod matching {selector} in {namespace}",
    )
    return [forward_pod(cluster, namespace, p, port, address=address) for p in pods]


@contextlib.contextmanager
def kubectl_port_forward(
    cluster: Cluster, namespace: str, resource: str, remote_port: int, *, timeout: float = 30.0
) -> Iterator[int]:
    """``kubectl port-forward RESOURCE :REMOTE`` on 127.0.0.1; yields the local port kubectl chose.

    kubectl picks a free port itself (no race with another process); the port is read from its
    "Forwarding from" line. Raises AssertionError with kubectl's stderr when it does not start.
    """
    cmd = [
        str(tools.bin_dir() / "kubectl"),
        "port-forward",
        "-n",
        namespace,
        "--address",
        "127.0.0.1",
        f"--pod-running-timeout={int(timeout)}s",
        resource,
        f":{remote_port}",
    ]
    proc = subprocess.Popen(
        cmd, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
    )
    stderr: list[str] = []
    # Drain stderr continuously: kubectl logs every broken stream there and would block on a full pipe.
    drain = threading.Thread(target=lambda: stderr.extend(proc.stderr or []), daemon=True)
    drain.start()
    try:
        local_port: int | None = None
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout + 10
        # readline blocks, but kubectl either prints the line or exits (EOF) within its own timeout.
        while local_port is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                proc.wait(5)
                drain.join(2)
                raise AssertionError(f"kubectl port-forward {resource} exited: {''.join(stderr).strip()}")
            match = _FORWARDING.match(line.strip())
            if match:
                local_port = int(match.group(1))
        if local_port is None:
            raise AssertionError(f"kubectl port-forward {resource} did not start within {timeout:.0f} s")
        yield local_port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def http_through_port_forward(
    cluster: Cluster,
    namespace: str,
    resource: str,
    remote_port: int,
    path: str = "/",
    *,
    timeout: float = 30.0,
) -> tuple[int, str]:
    """GET ``path`` through ``kubectl port-forward``; returns (status, body).

    Retries with a fresh kubectl until ``timeout``: a forward kwok has not seen yet breaks the
    first connection, and kubectl exits after a broken connection.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with kubectl_port_forward(cluster, namespace, resource, remote_port) as local:
                url = f"http://127.0.0.1:{local}{path}"
                try:
                    with urllib.request.urlopen(url, timeout=10) as resp:
                        return int(resp.status), resp.read().decode(errors="replace")
                except urllib.error.HTTPError as exc:
                    return int(exc.code), exc.read().decode(errors="replace")
        except (AssertionError, OSError) as exc:  # URLError is an OSError
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"GET {path} through port-forward to {namespace}/{resource} failed for "
                    f"{timeout:.0f} s; last error: {exc}"
                ) from None
        time.sleep(0.5)
