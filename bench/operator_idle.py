"""Quiet when idle: how many writes does the operator send to the apiserver while nothing changes?

Starts a local control plane (or uses ``--kubeconfig``), installs the CRDs, runs the operator as a
subprocess, creates N agents (each with its provider, API-key Secret, ConfigMap, bound Secret,
Deployment, Service; one kwok pod each), waits until every agent is Ready and the cluster has
settled, then counts write requests over a window, two ways:

- at the apiserver: ``apiserver_request_total`` for the write verbs (POST, PUT, PATCH, APPLY,
  DELETE) on the resources the operator writes (its custom resources' status, ConfigMaps,
  Secrets, Services, Deployments, HPAs, PDBs, ServiceMonitors, Events); other controllers do not
  write those while idle, so this bounds the operator's writes from outside;
- in the operator: its own ``sentient_operator_api_writes_total`` by verb and kind (Lease
  renewals of leader election are listed separately: they are the HA heartbeat, constant in N).

    python bench/operator_idle.py --agents 50 --window 300
"""

from __future__ import annotations

import argparse
import json
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "operator"), str(REPO)]

from e2e import fleet, tools  # noqa: E402
from e2e.cluster import LocalCluster  # noqa: E402
from e2e.operator_proc import OperatorProcess  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402

WRITE_VERBS = {"POST", "PUT", "PATCH", "APPLY", "DELETE", "CREATE", "UPDATE"}
OPERATOR_RESOURCES = {
    "sentientagents",
    "llmproviders",
    "ratelimitpolicies",
    "configmaps",
    "secrets",
    "services",
    "deployments",
    "horizontalpodautoscalers",
    "poddisruptionbudgets",
    "servicemonitors",
    "events",
}


def kubectl(kubeconfig: str, *args: str, input: str | None = None) -> str:
    """Run kubectl; stdout."""
    proc = subprocess.run(
        [str(tools.bin_dir() / "kubectl"), "--kubeconfig", kubeconfig, *args],
        input=input,
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout


def apiserver_writes(kubeconfig: str) -> Counter[tuple[str, str, str]]:
    """``apiserver_request_total`` of write verbs, by (resource, subresource, verb)."""
    text = kubectl(kubeconfig, "get", "--raw", "/metrics")
    counts: Counter[tuple[str, str, str]] = Counter()
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        head, _, value = line.rpartition(" ")
        labels = dict(
            part.split("=", 1)
            for part in head[len("apiserver_request_total{") : -1].split(",")
            if "=" in part
        )
        labels = {k: v.strip('"') for k, v in labels.items()}
        if labels.get("verb") in WRITE_VERBS:
            counts[(labels.get("resource", ""), labels.get("subresource", ""), labels["verb"])] += int(
                float(value)
            )
    return counts


def operator_writes(op: OperatorProcess) -> Counter[tuple[str, str]]:
    """The operator's own write counter by (verb, kind)."""
    counts: Counter[tuple[str, str]] = Counter()
    for line in op.metrics().splitlines():
        if line.startswith("sentient_operator_api_writes_total{"):
            head, _, value = line.rpartition(" ")
            labels = dict(p.split("=", 1) for p in head[head.index("{") + 1 : -1].split(","))
            counts[(labels["verb"].strip('"'), labels["kind"].strip('"'))] += int(float(value))
    return counts


def prepare(kubeconfig: str | None, prefix: str) -> tuple[LocalCluster | None, str, str]:
    """(the local cluster started here or None, its kubeconfig, a fresh namespace), CRDs installed.

    With ``kubeconfig`` that cluster is used; otherwise a local control plane is started (the
    caller stops it).
    """
    local: LocalCluster | None = None
    if kubeconfig is None:
        local = LocalCluster.create()
        local.start()
        kubeconfig = str(local.kubeconfig)
    namespace = f"{prefix}-{int(time.time())}"
    try:
        kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        kubectl(kubeconfig, "wait", "--for=condition=Established", "crd", "--all")
        kubectl(kubeconfig, "create", "namespace", namespace)
    except BaseException:
        if local is not None:
            local.stop()
        raise
    return local, kubeconfig, namespace


def ready_count(kubeconfig: str, namespace: str) -> int:
    """Agents whose Ready condition is True."""
    return len(fleet.ready_agents(lambda *a: kubectl(kubeconfig, *a), namespace))


def main() -> int:
    """Run the measurement and print the figures (JSON on the last line)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--window", type=float, default=300.0, help="seconds of idleness measured")
    parser.add_argument("--settle", type=float, default=20.0, help="quiet seconds before the window")
    parser.add_argument("--kubeconfig", default=None, help="use this cluster instead of starting one")
    parser.add_argument("--no-leader-election", action="store_true")
    parser.add_argument(
        "--restart", action="store_true", help="then restart the operator and count the writes of its startup"
    )
    parser.add_argument("--resync", type=float, default=None, help="SENTIENT_RESYNC_SECONDS (default 600)")
    args = parser.parse_args()
    ssl.create_default_context()  # fail early on a broken Python ssl

    local, kubeconfig, namespace = prepare(args.kubeconfig, "bench-idle")
    op: OperatorProcess | None = None
    try:
        env = {"SENTIENT_LEADER_ELECTION": "false"} if args.no_leader_election else {}
        env["SENTIENT_LEASE_DURATION"] = "15"
        env["SENTIENT_LEASE_RENEW_INTERVAL"] = "5"
        if args.resync is not None:
            env["SENTIENT_RESYNC_SECONDS"] = str(args.resync)
        log = Path(tempfile.gettempdir()) / f"{namespace}-operator.log"
        op = OperatorProcess(kubeconfig, [namespace], identity="bench", env=env, log_path=log).start()
        op.wait_for_log("_startup' succeeded", timeout=120)
        started = time.monotonic()
        kubectl(
            kubeconfig,
            "apply",
            "-f",
            "-",
            input="\n---\n".join(yaml.safe_dump(d) for d in fleet.manifests(namespace, args.agents)),
        )
        wait_for(
            lambda: ready_count(kubeconfig, namespace) == args.agents,
            timeout=900,
            interval=2,
            what="all agents Ready",
        )
        print(f"{args.agents} agents Ready in {time.monotonic() - started:.1f}s", flush=True)

        # Settle: wait until the operator's write counter stops moving for `settle` seconds.
        last = sum(operator_writes(op).values())
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < args.settle:
            time.sleep(2)
            now = sum(v for (verb, kind), v in operator_writes(op).items() if kind != "Lease")
            if now != last:
                last, quiet_since = now, time.monotonic()

        api_before, op_before = apiserver_writes(kubeconfig), operator_writes(op)
        reconciles_before = op.metric("sentient_operator_reconciles_total")
        time.sleep(args.window)
        api_after, op_after = apiserver_writes(kubeconfig), operator_writes(op)
        reconciles = op.metric("sentient_operator_reconciles_total") - reconciles_before

        api_diff = {k: v for k, v in (api_after - api_before).items() if k[0] in OPERATOR_RESOURCES}
        op_diff = op_after - op_before
        lease = op_diff.pop(("update", "Lease"), 0)
        result = {
            "agents": args.agents,
            "window_s": args.window,
            "apiserver_writes_on_operator_resources": sum(api_diff.values()),
            "apiserver_breakdown": {"/".join(filter(None, k)): v for k, v in sorted(api_diff.items())},
            "operator_writes_excluding_lease": sum(op_diff.values()),
            "operator_breakdown": {"/".join(k): v for k, v in sorted(op_diff.items())},
            "lease_renewals": lease,
            "reconciles_in_window": reconciles,
            "leader_election": not args.no_leader_election,
            "resync_s": args.resync or 600.0,
        }
        if args.restart:
            op.terminate()
            op = OperatorProcess(kubeconfig, [namespace], identity="bench-2", env=env, log_path=log).start()
            op.wait_for_log("_startup' succeeded", timeout=120)
            restarted = time.monotonic()
            # Every agent is reconciled once at start (the initial listing enqueues them all).
            wait_for(
                lambda: op is not None and op.metric("sentient_operator_reconciles_total") >= args.agents,
                timeout=300,
                interval=1,
                what="every agent reconciled after the restart",
            )
            result["restart_reconcile_all_s"] = round(time.monotonic() - restarted, 2)
            writes = operator_writes(op)
            writes.pop(("update", "Lease"), None)
            result["restart_writes_excluding_lease"] = sum(writes.values())
            result["restart_reconciles"] = op.metric("sentient_operator_reconciles_total")
        print(json.dumps(result), flush=True)
        return 0
    finally:
        if op is not None:
            if op.alive:
                subprocess.run(
                    [
                        str(tools.bin_dir() / "kubectl"),
                        "--kubeconfig",
                        kubeconfig,
                        "delete",
                        "namespace",
                        namespace,
                        "--wait=false",
                    ],
                    capture_output=True,
                    check=False,
                )
            op.terminate()
        if local is not None:
            local.stop()


if __name__ == "__main__":
    sys.exit(main())
