"""Edit-to-use latency of credential rotation: from editing the source secret to the first
upstream request that carries the new key.

Everything real runs locally: a control plane (``E2E_KUBECONFIG`` / ``--kubeconfig``, else a
fresh local one), the operator, an OpenBao dev server, fake OpenAI upstreams, and one agent
"pod" per source (``e2e.agent_pod`` mirrors the ConfigMap / bound Secret into files with the
kubelet's atomic swap, every ``--kubelet-interval`` seconds) serving back-to-back streams.

    PYTHONPATH=operator:. python bench/rotation_latency.py [--rounds 5] [--vault-refresh 5s]

Prints one line per rotation and a summary per source. For a Kubernetes Secret the path is
watch -> provider Secret -> bound Secret -> kubelet sync -> next request; for Vault it adds up
to one ``refreshInterval`` (the store is polled).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "operator"), str(REPO)]

from agent_runtime.config import provider_credential_file  # noqa: E402
from agent_runtime.testing import FakeUpstream  # noqa: E402
from e2e.agent_pod import AgentPod  # noqa: E402
from e2e.operator_proc import OperatorProcess  # noqa: E402
from tests.support.kube_helpers import create_provider, put_secret, secret_value  # noqa: E402
from tests.support.openbao import OpenBao  # noqa: E402
from tests.support.rotation import KeyFollower, Traffic, create_agent  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402


@contextlib.contextmanager
def kubeconfig(explicit: str | None) -> Iterator[str]:
    """An existing cluster's kubeconfig, or a local control plane started for the run."""
    path = explicit or os.environ.get("E2E_KUBECONFIG")
    if path:
        yield path
        return
    from e2e.cluster import LocalCluster

    local = LocalCluster.create()
    local.start()
    try:
        yield str(local.kubeconfig)
    finally:
        local.stop()


def kubectl(config: str, *args: str) -> None:
    """Run the cached kubectl."""
    from e2e import tools

    subprocess.run(
        [str(tools.bin_dir() / "kubectl"), *args],
        check=True,
        capture_output=True,
        env={**os.environ, "KUBECONFIG": config},
    )


class Stages:
    """Polls where a new key has arrived: provider Secret, bound Secret, mounted file."""

    def __init__(self, api: Any, namespace: str, provider: str, agent: str, pod: AgentPod) -> None:
        self.api, self.namespace, self.provider, self.agent, self.pod = api, namespace, provider, agent, pod
        self.file = provider_credential_file(namespace, provider)

    def watch(self, key: str, t0: float, stop: threading.Event, out: dict[str, float]) -> None:
        """Record the first time each stage shows ``key`` (seconds after ``t0``)."""
        provider_secret = f"sentient-provider-{self.provider}"
        bound_secret = f"{self.agent}-credentials"
        path = self.pod.credentials_dir / self.file
        while not stop.is_set() and len(out) < 3:
            now = time.monotonic() - t0
            if (
                "provider Secret" not in out
                and secret_value(self.api, self.namespace, provider_secret) == key
            ):
                out["provider Secret"] = now
            if (
                "bound Secret" not in out
                and secret_value(self.api, self.namespace, bound_secret, self.file) == key
            ):
                out["bound Secret"] = now
            if "mounted file" not in out and path.exists() and path.read_text().strip() == key:
                out["mounted file"] = now
            time.sleep(0.01)


def rotate(
    label: str, follower: KeyFollower, traffic: Traffic, edit: Any, rounds: int, stages: Stages
) -> list[float]:
    """``rounds`` rotations through ``edit(new_key)``; returns the latencies."""
    out: list[float] = []
    for i in range(rounds):
        mark = traffic.ok
        wait_for(lambda: traffic.progressed(mark, 3), f"{label}: traffic")  # noqa: B023
        new = f"sk-bench-{secrets.token_hex(8)}"
        follower.expect(new)
        seen: dict[str, float] = {}
        stop = threading.Event()
        t0 = time.monotonic()
        watcher = threading.Thread(target=stages.watch, args=(new, t0, stop, seen), daemon=True)
        watcher.start()
        edit(new)
        used = wait_for(lambda: follower.first_use.get(new), f"{label}: first use", timeout=120)  # noqa: B023
        stop.set()
        watcher.join()
        out.append(used - t0)
        steps = ", ".join(f"{k} {v:.2f}s" for k, v in sorted(seen.items(), key=lambda kv: kv[1]))
        print(f"{label:<18} rotation {i + 1}: {out[-1]:.2f}s  ({steps})", flush=True)
    if traffic.failed:
        print(f"{label}: {len(traffic.failed)} failed requests: {traffic.failed[:3]}", flush=True)
    return out


def main() -> int:
    """Run the measurement and print it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--vault-refresh", default="5s", help="refreshInterval of the Vault provider")
    parser.add_argument(
        "--kubelet-interval", type=float, default=0.5, help="agent_pod volume sync period (s)"
    )
    parser.add_argument("--kubeconfig", default=None)
    args = parser.parse_args()

    from kubernetes import client as kc
    from kubernetes import config as kconfig

    results: dict[str, list[float]] = {}
    with kubeconfig(args.kubeconfig) as config, tempfile.TemporaryDirectory(prefix="sentient-bench-") as tmp:
        kubectl(config, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        api = kconfig.new_client_from_config(config_file=config)
        ns = f"bench-rotation-{secrets.token_hex(3)}"
        kc.CoreV1Api(api).create_namespace(kc.V1Namespace(metadata=kc.V1ObjectMeta(name=ns)))
        first_k8s, first_vault = f"sk-bench-{secrets.token_hex(8)}", f"sk-bench-{secrets.token_hex(8)}"
        fake_k8s = FakeUpstream("openai", api_key=first_k8s, latency=0.002, tokens=20)
        fake_vault = FakeUpstream("openai", api_key=first_vault, latency=0.002, tokens=20)
        follow_k8s, follow_vault = KeyFollower.install(fake_k8s), KeyFollower.install(fake_vault)
        try:
            with (
                fake_k8s,
                fake_vault,
                OpenBao() as bao,
                OperatorProcess(config, [ns], leader_election=False, log_format="text"),
            ):
                kv = bao.client().secrets.kv.v2
                kv.create_or_update_secret(path="llm/bench", secret={"apiKey": first_vault})
                put_secret(api, ns, "k8s-key", {"apiKey": first_k8s})
                put_secret(api, ns, "vault-token", {"token": bao.root_token})
                common = {"type": "openai-compatible", "defaultModel": "fake-model"}
                create_provider(
                    api,
                    ns,
                    "k8s",
                    {
                        **common,
                        "endpoint": fake_k8s.endpoint,
                        "credentials": {"secretRef": {"name": "k8s-key", "key": "apiKey"}},
                    },
                )
                create_provider(
                    api,
                    ns,
                    "vault",
                    {
                        **common,
                        "endpoint": fake_vault.endpoint,
                        "credentials": {
                            "vault": {
                                "server": bao.url,
                                "path": "llm/bench",
                                "auth": {"token": {"secretRef": {"name": "vault-token", "key": "token"}}},
                            },
                            "refreshInterval": args.vault_refresh,
                        },
                    },
                )
                create_agent(api, ns, "k8s", "k8s")
                create_agent(api, ns, "vault", "vault")
                wait_for(lambda: secret_value(api, ns, "sentient-provider-k8s") == first_k8s, "k8s sync")
                wait_for(
                    lambda: secret_value(api, ns, "sentient-provider-vault") == first_vault, "vault sync"
                )
                pods = [
                    AgentPod(api, ns, name, Path(tmp) / name, interval=args.kubelet_interval)
                    for name in ("k8s", "vault")
                ]
                with pods[0] as pod_k8s, pods[1] as pod_vault:
                    pod_k8s.wait_ready()
                    pod_vault.wait_ready()
                    traffic = {"k8s": Traffic(pod_k8s.url), "vault": Traffic(pod_vault.url)}
                    for t in traffic.values():
                        t.start()
                    try:
                        results["Kubernetes Secret"] = rotate(
                            "Kubernetes Secret",
                            follow_k8s,
                            traffic["k8s"],
                            lambda key: put_secret(api, ns, "k8s-key", {"apiKey": key}),
                            args.rounds,
                            Stages(api, ns, "k8s", "k8s", pod_k8s),
                        )
                        results[f"Vault ({args.vault_refresh})"] = rotate(
                            f"Vault ({args.vault_refresh})",
                            follow_vault,
                            traffic["vault"],
                            lambda key: kv.create_or_update_secret(path="llm/bench", secret={"apiKey": key}),
                            args.rounds,
                            Stages(api, ns, "vault", "vault", pod_vault),
                        )
                    finally:
                        for t in traffic.values():
                            t.stop()
                failed = sum(len(t.failed) for t in traffic.values())
                served = sum(t.ok for t in traffic.values())
        finally:
            kc.CoreV1Api(api).delete_namespace(ns)
            api.close()
    print(
        f"\nedit-to-use latency (kubelet sync every {args.kubelet_interval}s), {served} streams, {failed} failed:"
    )
    for label, values in results.items():
        print(
            f"  {label:<18} min {min(values):.2f}s  median {statistics.median(values):.2f}s  max {max(values):.2f}s"
        )
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
