"""Back every agent pod of the local control plane with a real runtime process.

On the local control plane kwok fakes the pods: they turn Running and Ready, but nothing runs in
them. The supervisor plays the kubelet for all of them at once, as long as the cluster runs:

- it lists the agent pods the operator's Deployments made (label
  ``app.kubernetes.io/name=sentient-agent``) in every namespace, once a second;
- for each agent with at least one Running pod it runs one ``python -m agent_runtime`` (an
  :class:`~e2e.agent_pod.AgentPod`: the agent's ConfigMap and Secret mirrored as kubelet volumes,
  so hot reload and rotation work as in a pod); one process serves every replica of an agent,
  which is enough for a local cluster and keeps a hundred agents affordable;
- it points each Running pod's ports at that process with a kwok ``PortForward`` (``http`` -> the
  runtime's API, ``metrics`` -> its metrics), so ``kubectl port-forward svc/NAME``,
  ``sentient chat ns/name`` and curl through the forward reach the agent as on a real cluster;
- a runtime that exits is started again with a growing delay (like a CrashLoopBackOff); an agent
  whose pods are gone (deleted, scaled to zero) has its runtime stopped with SIGTERM.

``make demo ARGS=--keep`` and ``make cluster-up`` run it; ``python -m e2e.pod_supervisor`` runs
it alone against ``$KUBECONFIG``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e.agent_pod import AgentPod

log = logging.getLogger("sentient.pod-supervisor")

AGENT_POD_SELECTOR = "app.kubernetes.io/name=sentient-agent"
INSTANCE_LABEL = "app.kubernetes.io/instance"
KWOK_GROUP, KWOK_VERSION, KWOK_PLURAL = "kwok.x-k8s.io", "v1alpha1", "portforwards"
# The container ports of the runtime in the agent Deployment (build/children.py).
HTTP_PORT, METRICS_PORT = 8080, 9090
MAX_BACKOFF = 30.0


@dataclass
class _Agent:
    """One supervised agent: its runtime and the pods forwarded to it."""

    pod: AgentPod
    announced: bool = False
    error: str = ""
    restarts: int = 0
    next_start: float = 0.0
    forwarded: dict[str, str] = field(default_factory=dict)  # pod name -> pod uid


class PodSupervisor:
    """Follows agent pods and keeps one runtime process per agent with Running pods.

    Every runtime is started and stopped from the supervisor's own thread, which lives as long as
    the supervisor: the runtimes are started with a parent-death signal, which the kernel ties to
    the thread that started them, so a supervisor killed with SIGKILL leaves no runtime behind.
    """

    def __init__(
        self,
        api_client: Any,
        workdir: Path,
        *,
        interval: float = 1.0,
        python: str = sys.executable,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.api_client = api_client
        self.workdir = Path(workdir)
        self.interval = interval
        self.python = python
        self.on_event = on_event or (lambda message: log.info("%s", message))
        self.agents: dict[tuple[str, str], _Agent] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ public

    def start(self) -> PodSupervisor:
        """Start following pods in a background thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="pod-supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop following pods and stop every runtime (SIGTERM, graceful drain)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def runtime(self, namespace: str, name: str) -> AgentPod | None:
        """The runtime of an agent, when its process runs and its readiness probe passes."""
        with self._lock:
            agent = self.agents.get((namespace, name))
        if agent is None or agent.pod.process is None or agent.pod.process.poll() is not None:
            return None
        return agent.pod if agent.pod.ready() else None

    def wait_runtime(self, namespace: str, name: str, timeout: float = 90.0) -> AgentPod:
        """Until the agent has a ready runtime; raises TimeoutError naming the last error."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pod = self.runtime(namespace, name)
            if pod is not None:
                return pod
            time.sleep(0.2)
        with self._lock:
            agent = self.agents.get((namespace, name))
        detail = (agent.error or agent.pod.log_tail()) if agent is not None else "no Running pod seen"
        raise TimeoutError(f"{namespace}/{name}: no ready runtime within {timeout:.0f} s: {detail}")

    def __enter__(self) -> PodSupervisor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ loop

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self.sync_once()
                except Exception as exc:  # the apiserver may be restarting; try again next round
                    log.warning("pod supervisor: %s", exc)
                self._stop.wait(self.interval)
        finally:
            with self._lock:
                keys = list(self.agents)
            for key in keys:
                self._retire(key, "supervisor stopping")

    def _running_pods(self) -> dict[tuple[str, str], list[dict[str, Any]]]:
        from kubernetes import client

        pods = client.CoreV1Api(self.api_client).list_pod_for_all_namespaces(
            label_selector=AGENT_POD_SELECTOR, _request_timeout=10
        )
        grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for pod in pods.items:
            meta = pod.metadata
            if meta is None or meta.deletion_timestamp or (pod.status and pod.status.phase) != "Running":
                continue
            instance = (meta.labels or {}).get(INSTANCE_LABEL)
            if instance and meta.namespace:
                grouped.setdefault((meta.namespace, instance), []).append(
                    {"name": meta.name, "uid": meta.uid}
                )
        return grouped

    def sync_once(self) -> None:
        """One round: start, restart, forward and stop runtimes to match the Running pods."""
        wanted = self._running_pods()
        with self._lock:
            gone = [key for key in self.agents if key not in wanted]
        for key in gone:
            self._retire(key, "no Running pod left")
        for key, pods in wanted.items():
            agent = self._ensure(key)
            if agent.pod.process is not None and agent.pod.process.poll() is None:
                self._forward(key, agent, pods)
                if not agent.announced and agent.pod.ready():
                    agent.announced, agent.error = True, ""
                    self.on_event(
                        f"{key[0]}/{key[1]}: runtime ready on {agent.pod.url} (metrics {agent.pod.metrics_url})"
                    )

    def _ensure(self, key: tuple[str, str]) -> _Agent:
        namespace, name = key
        with self._lock:
            agent = self.agents.get(key)
            if agent is None:
                pod = AgentPod(
                    self.api_client,
                    namespace,
                    name,
                    self.workdir / namespace / name,
                    python=self.python,
                    die_with_parent=True,
                )
                agent = self.agents[key] = _Agent(pod=pod)
        process = agent.pod.process
        if process is not None and process.poll() is None:
            return agent
        if process is not None:  # it exited: back off, then start it again
            code = process.returncode
            agent.pod.stop()
            agent.pod.process = None
            agent.announced = False
            agent.forwarded.clear()
            agent.restarts += 1
            delay = min(MAX_BACKOFF, 2.0 ** min(agent.restarts, 5))
            agent.next_start = time.monotonic() + delay
            agent.error = f"runtime exited with code {code}; log: {agent.pod.log_path}"
            self.on_event(f"{namespace}/{name}: {agent.error}; starting again in {delay:.0f} s")
        if time.monotonic() < agent.next_start:
            return agent
        # Start only once the operator has rendered the ConfigMap and Secret (never block the loop
        # on it: other agents are waiting for their round too).
        agent.pod.workdir.mkdir(parents=True, exist_ok=True)
        agent.pod.sync()
        if agent.pod.mirrored():
            agent.pod.start()
        return agent

    def _forward(self, key: tuple[str, str], agent: _Agent, pods: list[dict[str, Any]]) -> None:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        namespace, _ = key
        api = client.CustomObjectsApi(self.api_client)
        for pod in pods:
            if agent.forwarded.get(pod["name"]) == pod["uid"]:
                continue
            body: dict[str, Any] = {
                "apiVersion": f"{KWOK_GROUP}/{KWOK_VERSION}",
                "kind": "PortForward",
                "metadata": {
                    # kwok matches a PortForward to a pod by name and namespace; owned by the pod
                    # so that it goes away with it.
                    "name": pod["name"],
                    "namespace": namespace,
                    "ownerReferences": [
                        {"apiVersion": "v1", "kind": "Pod", "name": pod["name"], "uid": pod["uid"]}
                    ],
                },
                "spec": {
                    "forwards": [
                        {"ports": [HTTP_PORT], "target": {"address": "127.0.0.1", "port": agent.pod.port}},
                        {
                            "ports": [METRICS_PORT],
                            "target": {"address": "127.0.0.1", "port": agent.pod.metrics_port},
                        },
                    ]
                },
            }
            try:
                api.create_namespaced_custom_object(
                    KWOK_GROUP, KWOK_VERSION, namespace, KWOK_PLURAL, body, _request_timeout=10
                )
            except ApiException as exc:
                if exc.status != 409:
                    raise
                current: dict[str, Any] = api.get_namespaced_custom_object(  # type: ignore[assignment]
                    KWOK_GROUP, KWOK_VERSION, namespace, KWOK_PLURAL, pod["name"], _request_timeout=10
                )
                body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                api.replace_namespaced_custom_object(
                    KWOK_GROUP, KWOK_VERSION, namespace, KWOK_PLURAL, pod["name"], body, _request_timeout=10
                )
            agent.forwarded[pod["name"]] = pod["uid"]

    def _retire(self, key: tuple[str, str], why: str) -> None:
        with self._lock:
            agent = self.agents.pop(key, None)
        if agent is None:
            return
        if agent.pod.process is not None:
            agent.pod.stop()
            self.on_event(f"{key[0]}/{key[1]}: {why}; runtime stopped")


def main(argv: list[str] | None = None) -> int:
    """``python -m e2e.pod_supervisor``: follow the agent pods of ``$KUBECONFIG`` until a signal."""
    parser = argparse.ArgumentParser(prog="python -m e2e.pod_supervisor", description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    parser.add_argument("--workdir", type=Path, default=None, help="where runtime volumes and logs go")
    args = parser.parse_args(argv)
    if not args.kubeconfig:
        parser.error("no kubeconfig: pass --kubeconfig or set KUBECONFIG")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from kubernetes import config as k8s_config

    api = k8s_config.new_client_from_config(config_file=args.kubeconfig)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="sentient-pods-"))
        )
        with PodSupervisor(api, workdir):
            stop.wait()
    api.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
