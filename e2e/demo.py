"""``make demo``: the whole product on this machine, in about a minute on a warm cache.

1. start the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok),
2. ``helm install`` the operator chart (CRDs, RBAC, the operator Deployment — its pod is faked
   by kwok, so the operator itself runs here as a local process),
3. start a fake OpenAI-compatible upstream on 127.0.0.1:8900 (the endpoint of
   ``examples/agent.yaml``) that accepts the example's key,
4. ``kubectl apply -f examples/agent.yaml`` and wait for ``condition=Ready``,
5. back every agent pod with a runtime process fed with the ConfigMap and Secret the operator
   rendered (as the kubelet would mount them; see ``e2e/pod_supervisor.py``), and stream an
   answer through ``POST /assist``,
6. print the status table, then stop everything (or, with ``--keep``, keep it all running
   until Ctrl-C, SIGTERM or SIGHUP, print how to talk to it, and back every agent the user
   applies with a runtime too, reachable with ``sentient chat ns/name`` and port-forward).

Any of those signals cleans up like Ctrl-C; the runtimes and the fake upstream also die with the
demo if it is killed outright.

With ``E2E_KUBECONFIG`` set, an existing cluster is used instead of starting one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from agent_runtime.client import SyncSentientClient
from agent_runtime.protocol import DocumentEvent, DoneEvent, ErrorEvent, TextBlockEvent, TextChunkEvent
from e2e import tools
from e2e.agent_pod import set_parent_death_signal
from e2e.cluster import Cluster, LocalCluster
from e2e.operator_proc import running_operator
from e2e.pod_supervisor import PodSupervisor
from tests.support.net import wait_for_port

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "agent.yaml"
CHART = REPO / "charts" / "sentient-operator"
NAMESPACE = "default"
UPSTREAM_PORT = 8900
QUESTION = "In one paragraph: what does sentient-operator give a platform team?"


def step(message: str, started: float) -> None:
    """One progress line with the elapsed time (bold on a terminal, plain text in a log)."""
    line = f"[{time.monotonic() - started:5.1f}s] {message}"
    print(f"\033[1m{line}\033[0m" if sys.stdout.isatty() else line, flush=True)


def _example_values() -> tuple[str, str, str]:
    """(provider key, a caller key, agent name) from examples/agent.yaml, so the demo follows the file."""
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    secrets = {d["metadata"]["name"]: d.get("stringData", {}) for d in docs if d["kind"] == "Secret"}
    provider = next(d for d in docs if d["kind"] == "LLMProvider")
    agent = next(d for d in docs if d["kind"] == "SentientAgent")
    ref = provider["spec"]["credentials"]["secretRef"]
    upstream_key = secrets[ref["name"]][ref["key"]]
    callers = secrets[agent["spec"]["auth"]["apiKeys"]["secretRef"]["name"]]
    caller_key = next(v for k, v in callers.items() if not k.endswith(".tier"))
    return upstream_key, caller_key, agent["metadata"]["name"]


@contextlib.contextmanager
def control_plane(started: float) -> Iterator[Cluster]:
    """The cluster to use: ``E2E_KUBECONFIG`` or a fresh local control plane."""
    external = os.environ.get("E2E_KUBECONFIG")
    if external:
        step(f"using the cluster of E2E_KUBECONFIG={external}", started)
        yield Cluster.from_kubeconfig(external)
        return
    step(
        "starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)",
        started,
    )
    with LocalCluster.create() as local:
        cluster = Cluster.from_kubeconfig(str(local.kubeconfig), local=local)
        nodes = cluster.kubectl("get", "nodes", "-o", "name").stdout.split()
        step(
            f"control plane up: {cluster.server}, nodes: {', '.join(n.split('/')[-1] for n in nodes)}",
            started,
        )
        yield cluster


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def fake_upstream(api_key: str, workdir: Path) -> Iterator[str]:
    """A fake OpenAI-compatible server on 127.0.0.1:8900 that streams slowly enough to watch."""
    if _port_taken(UPSTREAM_PORT):
        # Never talk to whatever holds the port (a leaked upstream of an older demo answers with
        # another key, or something else entirely): say so and stop.
        raise SystemExit(
            f"error: 127.0.0.1:{UPSTREAM_PORT} is already in use, and the demo's fake upstream needs it "
            f"(examples/agent.yaml points there). Find the process with `ss -ltnp 'sport = :{UPSTREAM_PORT}'` "
            "and stop it (a demo from an older checkout may have left one running)."
        )
    log = (workdir / "upstream.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent_runtime.testing",
            "--kind",
            "openai",
            "--port",
            str(UPSTREAM_PORT),
            "--api-key",
            api_key,
            "--latency",
            "0.03",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": f"{REPO / 'operator'}{os.pathsep}{REPO}"},
        preexec_fn=set_parent_death_signal,  # from the main thread: lives as long as the demo
    )
    try:
        try:
            wait_for_port(UPSTREAM_PORT, timeout=20)
            if proc.poll() is not None:
                raise TimeoutError
        except TimeoutError:
            raise SystemExit(
                f"error: the fake upstream did not start on 127.0.0.1:{UPSTREAM_PORT} "
                f"(is the port taken?); log: {workdir / 'upstream.log'}"
            ) from None
        yield f"http://127.0.0.1:{UPSTREAM_PORT}/v1"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        log.close()


@contextlib.contextmanager
def operator(cluster: Cluster) -> Iterator[None]:
    """The operator as a local process, leading.

    On a throwaway local control plane it is simply stopped; on an external cluster the demo's
    agent is deleted (and its children awaited) first, so nothing is left behind there.
    """
    with running_operator(cluster, NAMESPACE, delete_agents=cluster.local is None):
        yield


def stream_answer(url: str, api_key: str) -> None:
    """Ask one question through /assist and print events as they arrive."""
    print(f"\n  POST {url}/assist  prompt={QUESTION!r}\n")
    with SyncSentientClient(url, api_key=api_key, timeout=60) as client:
        for event in client.assist(QUESTION):
            if isinstance(event, TextChunkEvent):
                if event.content:
                    print(event.content, end="", flush=True)
                if event.is_complete:
                    print()
            elif isinstance(event, TextBlockEvent | DocumentEvent):
                print(f"  [{event.event_name}] {event.content}")
            elif isinstance(event, ErrorEvent):
                print(f"  [error {event.error_code}] {event.error_message}")
            elif isinstance(event, DoneEvent):
                print("  [done]\n")


def run(keep: bool) -> int:
    """The demo; returns the process exit code."""
    started = time.monotonic()
    tools.ensure()
    upstream_key, caller_key, agent = _example_values()
    with tempfile.TemporaryDirectory(prefix="sentient-demo-") as tmp, control_plane(started) as cluster:
        workdir = Path(tmp)
        step("helm install sentient-operator (CRDs, RBAC, operator Deployment)", started)
        cluster.helm(
            "install",
            "sentient-operator",
            str(CHART),
            "-n",
            "sentient-system",
            "--create-namespace",
            "--wait",
            "--timeout",
            "90s",
        )
        step(f"fake OpenAI-compatible upstream on 127.0.0.1:{UPSTREAM_PORT}", started)
        from kubernetes import config as k8s_config

        api = k8s_config.new_client_from_config(config_file=cluster.kubeconfig)
        with (
            fake_upstream(upstream_key, workdir),
            operator(cluster),
            PodSupervisor(api, workdir / "pods", on_event=lambda _message: None) as supervisor,
        ):
            step("operator running (python -m sentient_operator, leader)", started)
            step(f"kubectl apply -f {EXAMPLE.relative_to(REPO)}", started)
            print(cluster.kubectl("apply", "-n", NAMESPACE, "-f", str(EXAMPLE)).stdout.rstrip())
            cluster.kubectl(
                "wait", "-n", NAMESPACE, "--for=condition=Ready", f"sentientagent/{agent}", "--timeout=90s"
            )
            step(
                f"sentientagent/{agent} is Ready; its pods get a runtime from the rendered ConfigMap + Secret",
                started,
            )
            pod = supervisor.wait_runtime(NAMESPACE, agent, timeout=60)
            step(f"agent runtime ready at {pod.url} (backing the agent's pods); streaming an answer", started)
            stream_answer(pod.url, caller_key)
            step("status", started)
            print(
                cluster.kubectl(
                    "get", "sentientagents,llmproviders,ratelimitpolicies", "-n", NAMESPACE
                ).stdout.rstrip()
            )
            print()
            status = subprocess.run(
                [sys.executable, "-m", "sentient_operator.cli", "status", "-n", NAMESPACE],
                env=cluster.env,
                capture_output=True,
                text=True,
                check=False,
            )
            print(status.stdout.rstrip() or status.stderr.rstrip())
            if keep:
                print(keep_hint(cluster, agent, caller_key), flush=True)
                supervisor.on_event = lambda message: print(f"  [pods] {message}", flush=True)
                with contextlib.suppress(KeyboardInterrupt):
                    while True:
                        time.sleep(1)
            step("stopping: the runtimes drain and exit (SIGTERM)", started)
            step("stopping: the operator", started)
        api.close()
        step("stopping: the control plane", started)
    step(
        "done: the operator, the runtime, the upstream and the control plane are stopped and their "
        "files removed; nothing to clean up (`make demo ARGS=--keep` keeps them running)",
        started,
    )
    return 0


def keep_hint(cluster: Cluster, agent: str, caller_key: str) -> str:
    """What to paste into another shell to use the kept cluster (no assumption about cwd or PATH)."""
    venv_bin = Path(sys.executable).parent
    return (
        "\nEverything keeps running until Ctrl-C (or SIGTERM/SIGHUP). Every agent you apply gets a\n"
        "runtime process too. In another shell, paste:\n\n"
        f"  export KUBECONFIG={cluster.kubeconfig}\n"
        f"  export PATH={tools.bin_dir()}:{venv_bin}:$PATH\n"
        f"  export PYTHONPATH={REPO / 'operator'}:{REPO}\n"
        f"  alias sentient='{sys.executable} -m sentient_operator.cli'\n\n"
        "then:\n\n"
        "  kubectl get sentient -A\n"
        f"  sentient chat {NAMESPACE}/{agent} --api-key {caller_key} -p 'hello'\n"
        f"  kubectl port-forward -n {NAMESPACE} svc/{agent} 8080:80   # then curl http://127.0.0.1:8080/ready\n"
    )


def _interrupt(signum: int, frame: object) -> None:
    # SIGTERM and SIGHUP unwind exactly like Ctrl-C: every context manager stops what it started.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m e2e.demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--keep", action="store_true", help="keep everything running until Ctrl-C, SIGTERM or SIGHUP"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    try:
        return run(args.keep)
    except KeyboardInterrupt:
        print("interrupted: everything the demo started is stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
