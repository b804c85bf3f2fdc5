"""The operator at scale: N agents to Ready against a floor, and a shared provider edit rolling them.

For each N (``--sizes``), on fresh local control planes:

1. **floor**: the same child objects the operator would make for N agents (ConfigMap, bound
   Secret, Deployment, Service each, built by the operator's own builders, without the owner
   reference) created directly by one client (``kubectl create``), until every Deployment is
   Available;
2. **operator**: the operator running (no leader election), N agents with their API-key Secrets
   created at once, until every agent is Ready; the operator's CPU-seconds and RSS; also when it
   had applied every agent's Deployment and when half the agents were Ready (whether the time
   goes to the operator's writes or to the Deployments' pods);
3. **rollout**: one edit of the LLMProvider that every agent uses (its default model, so every
   agent's config changes), until every Deployment has rolled to the new config and every agent is
   Ready again (and when the operator had re-applied every Deployment): how long, and how often an
   agent was seen Ready=False or a NotReady Event was posted meanwhile (maxUnavailable 0 keeps a
   pod available throughout, so never should be).

Also the operator's Event-write counter against the Events it really posted. Loopback only, each
phase bounded by ``--timeout``. The machine's load averages are printed with the figures: ratios
come from one run on one machine; CPU-seconds and RSS are the figures least moved by other load.

    python bench/operator_scale.py --sizes 100,300,1000
"""

from __future__ import annotations

import argparse
import codecs
import json
import math
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "operator"), str(REPO)]

from bench.operator_idle import apiserver_writes, kubectl, operator_writes  # noqa: E402
from bench.operator_memory import create_in_batches, memory_kib  # noqa: E402
from e2e import fleet, tools  # noqa: E402
from e2e.cluster import LocalCluster  # noqa: E402
from e2e.operator_proc import OperatorProcess  # noqa: E402
from sentient_operator.api.v1alpha1 import LLMProviderSpec, RateLimitPolicySpec, SentientAgentSpec  # noqa: E402
from sentient_operator.build import (  # noqa: E402
    CONFIG_HASH_ANNOTATION,
    AgentInputs,
    ResolvedPolicy,
    ResolvedProvider,
    build_children,
)
from sentient_operator.build.inputs import APIKey  # noqa: E402
from sentient_operator.kube import REPORTING_COMPONENT  # noqa: E402

IMAGE = "sentient-agent-runtime:e2e"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Seconds of quiet after the rollout before the settled RSS is read (longer than the operator's
# heap-trim period, 20 s).
SETTLE_S = 25.0


class BenchError(RuntimeError):
    """A phase that did not finish in time."""


# --------------------------------------------------------------------------- the objects


def floor_children(namespace: str, n: int) -> list[dict[str, Any]]:
    """The children of the fleet's N agents as the operator builds them, without owner references
    (no agent exists on the floor's cluster; the garbage collector would take them)."""
    docs = fleet.manifests(namespace, n)
    provider_doc = next(d for d in docs if d["kind"] == "LLMProvider")
    policy_doc = next(d for d in docs if d["kind"] == "RateLimitPolicy")
    provider_spec = LLMProviderSpec.model_validate(provider_doc["spec"])
    provider = ResolvedProvider(
        namespace=namespace,
        name=provider_doc["metadata"]["name"],
        spec=provider_spec,
        model=provider_spec.default_model or "",
        api_key="sk-bench",
    )
    policy = ResolvedPolicy(
        namespace=namespace,
        name=policy_doc["metadata"]["name"],
        spec=RateLimitPolicySpec.model_validate(policy_doc["spec"]),
    )
    children: list[dict[str, Any]] = []
    for i, doc in enumerate(d for d in docs if d["kind"] == "SentientAgent"):
        spec = SentientAgentSpec.model_validate(doc["spec"])
        inputs = AgentInputs(
            name=doc["metadata"]["name"],
            namespace=namespace,
            uid=f"00000000-0000-4000-8000-{i:012d}",
            spec=spec,
            providers=[provider],
            image=IMAGE,
            policy=policy,
            system_prompt=spec.system_prompt or "",
            api_keys={"client": APIKey(f"key-{i}")},
            audit_key=secrets.token_hex(32),
        )
        wanted, _ = build_children(inputs)
        for obj in wanted:
            obj["metadata"].pop("ownerReferences", None)
            children.append(obj)
    return children


def get_items(kubeconfig: str, namespace: str, what: str) -> list[dict[str, Any]]:
    """Every object of ``what`` in ``namespace``."""
    items: list[dict[str, Any]] = json.loads(kubectl(kubeconfig, "get", what, "-n", namespace, "-o", "json"))[
        "items"
    ]
    return items


class WatchedKind:
    """Every object of one kind in a namespace, kept current by one ``kubectl get --watch``.

    Listing 1000 agents every second cost the apiserver, kubectl and this process more CPU than
    some of what is measured (a custom resource list is encoded as unstructured JSON each time);
    a watch costs one encoding per change, the same for the floor's Deployments and the agents.
    """

    def __init__(self, kubeconfig: str, namespace: str, what: str) -> None:
        self._objects: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            [
                str(tools.bin_dir() / "kubectl"), "--kubeconfig", kubeconfig, "get", what, "-n", namespace,
                "--watch", "--output-watch-events", "-o", "json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, name=f"watch-{what}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        utf8 = codecs.getincrementaldecoder("utf-8")()
        decoder = json.JSONDecoder()
        buffer = ""
        while chunk := os.read(fd, 1 << 16):
            buffer += utf8.decode(chunk)
            while True:
                buffer = buffer.lstrip()
                try:
                    event, end = decoder.raw_decode(buffer)
                except json.JSONDecodeError:
                    break
                buffer = buffer[end:]
                obj = event.get("object") or {}
                name = (obj.get("metadata") or {}).get("name")
                if not name:
                    continue
                with self._lock:
                    if event.get("type") == "DELETED":
                        self._objects.pop(name, None)
                    else:
                        self._objects[name] = obj

    def items(self) -> list[dict[str, Any]]:
        """The objects as last seen."""
        with self._lock:
            return list(self._objects.values())

    def close(self) -> None:
        """Stop the watch."""
        self._proc.terminate()
        self._proc.wait(10)


def deployment_rolled(dep: dict[str, Any], old_hash: str | None = None) -> bool:
    """Available with every replica updated and observed (and, given ``old_hash``, a new config)."""
    status = dep.get("status") or {}
    want = (dep.get("spec") or {}).get("replicas", 1)
    annotations = dep["spec"]["template"]["metadata"].get("annotations") or {}
    return (
        status.get("observedGeneration", 0) >= dep["metadata"].get("generation", 0)
        and status.get("updatedReplicas", 0) == want
        and status.get("replicas", 0) == want
        and status.get("availableReplicas", 0) >= want
        and (old_hash is None or annotations.get(CONFIG_HASH_ANNOTATION) != old_hash)
    )


def agent_ready(agent: dict[str, Any]) -> bool:
    """Ready=True for the agent's current generation."""
    generation = agent["metadata"].get("generation")
    return any(
        c.get("type") == "Ready"
        and c.get("status") == "True"
        and c.get("observedGeneration", generation) == generation
        for c in (agent.get("status") or {}).get("conditions") or []
    )


def poll(check: Callable[[], bool], timeout: float, interval: float, what: str) -> float:
    """Seconds until ``check()`` is true (checked every ``interval``), or BenchError."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise BenchError(f"{what}: not done after {timeout:.0f} s")
        time.sleep(interval)
    return time.monotonic() - started


# --------------------------------------------------------------------------- the process


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def component_cpu(local: LocalCluster) -> dict[str, float]:
    """CPU-seconds so far of each control-plane process (apiserver, etcd, controllers, kwok)."""
    out: dict[str, float] = {}
    for name, comp in local.components.items():
        if comp.proc is not None and comp.proc.poll() is None:
            out[name] = cpu_seconds(comp.proc.pid)
    return out


def cpu_delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """Per-process CPU-seconds between two ``component_cpu`` readings."""
    return {k: round(v - before.get(k, 0.0), 1) for k, v in after.items()}


def api_writes(kubeconfig: str) -> dict[str, int]:
    """The apiserver's own count of write requests so far, by ``VERB resource[/subresource]``:
    one yardstick for the floor's client and for the operator with the bench."""
    return {
        f"{verb} {resource}{'/' + sub if sub else ''}": count
        for (resource, sub, verb), count in apiserver_writes(kubeconfig).items()
    }


def count_delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """Per-key increase between two ``api_writes`` readings (zero rows left out)."""
    return {k: v - before.get(k, 0) for k, v in sorted(after.items()) if v - before.get(k, 0)}


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB."""
    kib = memory_kib(pid)
    return round(kib["VmRSS"] / 1024, 1), round(kib["VmHWM"] / 1024, 1)


@dataclass
class SizeResult:
    """The figures of one N."""

    n: int
    floor_s: float = float("nan")
    floor_half_s: float = float("nan")
    # When the bench's own `kubectl create` (one request at a time) returned, in each phase: how
    # much of the time the creates themselves took, slowed by what else the apiserver does.
    floor_created_s: float = float("nan")
    created_s: float = float("nan")
    operator_s: float = float("nan")
    # When the operator had applied every Deployment, and when half the agents were Ready.
    children_s: float = float("nan")
    half_s: float = float("nan")
    # When the operator had re-applied every Deployment after the provider edit.
    rollout_children_s: float = float("nan")
    create_cpu_s: float = float("nan")
    rss_mib: float = float("nan")
    peak_rss_mib: float = float("nan")
    # RSS once the fleet has been quiet for SETTLE_S (the operator trims its heap after work).
    settled_rss_mib: float = float("nan")
    rollout_s: float = float("nan")
    rollout_cpu_s: float = float("nan")
    rollout_not_ready_agents: int = -1
    rollout_not_ready_events: int = -1
    events_counted: int = -1
    events_posted: int = -1
    writes: dict[str, int] = field(default_factory=dict)
    # The control plane's CPU-seconds by process and the apiserver's write requests, per phase.
    floor_cpu: dict[str, float] = field(default_factory=dict)
    create_cpu: dict[str, float] = field(default_factory=dict)
    rollout_cpu: dict[str, float] = field(default_factory=dict)
    floor_api_writes: dict[str, int] = field(default_factory=dict)
    create_api_writes: dict[str, int] = field(default_factory=dict)
    rollout_api_writes: dict[str, int] = field(default_factory=dict)
    load: list[float] = field(default_factory=list)
    error: str = ""

    @property
    def ratio(self) -> float:
        """Operator time over floor time."""
        return self.operator_s / self.floor_s

    @property
    def rollout_ratio(self) -> float:
        """Rollout time over the operator's create time."""
        return self.rollout_s / self.operator_s


def fresh_cluster(namespace: str) -> LocalCluster:
    """A local control plane with the CRDs and ``namespace``."""
    local = LocalCluster.create()
    local.start()
    kubeconfig = str(local.kubeconfig)
    try:
        kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        kubectl(kubeconfig, "wait", "--for=condition=Established", "crd", "--all")
        kubectl(kubeconfig, "create", "namespace", namespace)
    except BaseException:
        local.stop()
        raise
    return local


def measure_floor(result: SizeResult, timeout: float, interval: float) -> None:
    """Seconds from the first create to every Deployment Available (and to half of them), on a
    fresh cluster, with the control plane's CPU and writes meanwhile, into ``result``."""
    namespace, n = "floor", result.n
    children = floor_children(namespace, n)
    local = fresh_cluster(namespace)
    kubeconfig = str(local.kubeconfig)
    deployments = WatchedKind(kubeconfig, namespace, "deployments")
    try:
        cpu0, writes0 = component_cpu(local), api_writes(kubeconfig)
        started = time.monotonic()
        create_in_batches(kubeconfig, children, batch=1000)
        result.floor_created_s = time.monotonic() - started

        half = float("nan")

        def available() -> bool:
            nonlocal half
            deps = deployments.items()
            count = sum(deployment_rolled(d) for d in deps)
            if count * 2 >= n and math.isnan(half):
                half = time.monotonic() - started
            return len(deps) == n and count == n

        poll(available, timeout, interval, f"floor of {n}")
        result.floor_s, result.floor_half_s = time.monotonic() - started, half
        result.floor_cpu = cpu_delta(component_cpu(local), cpu0)
        result.floor_api_writes = count_delta(api_writes(kubeconfig), writes0)
    finally:
        deployments.close()
        local.stop()


def measure_operator(result: SizeResult, timeout: float, interval: float, workdir: Path) -> None:
    """The operator's create and rollout figures, into ``result``."""
    n, namespace = result.n, "scale"
    local = fresh_cluster(namespace)
    kubeconfig = str(local.kubeconfig)
    op: OperatorProcess | None = None
    agents = WatchedKind(kubeconfig, namespace, "sentientagents")
    deployments = WatchedKind(kubeconfig, namespace, "deployments")
    try:
        docs = fleet.manifests(namespace, n)
        shared = [
            d
            for d in docs
            if d["kind"] in ("LLMProvider", "RateLimitPolicy") or d["metadata"]["name"] == "upstream-key"
        ]
        per_agent = [d for d in docs if d not in shared]
        kubectl(kubeconfig, "apply", "-f", "-", input="\n---\n".join(yaml.safe_dump(d) for d in shared))
        op = OperatorProcess(
            kubeconfig,
            [namespace],
            identity="scale",
            leader_election=False,
            log_path=workdir / f"operator-{n}.log",
        ).start()
        op.wait_for_log("_startup' succeeded", timeout=120)
        assert op.process is not None
        pid = op.process.pid
        poll(
            lambda: operator_writes(op).get(("patch-status", "LLMProvider"), 0) > 0,
            60,
            0.2,
            "provider synced",
        )

        last_scrape, applied = 0.0, 0

        def deployments_applied() -> int:
            # The operator's metrics at most once a second: rendering them costs it CPU.
            nonlocal last_scrape, applied
            if time.monotonic() - last_scrape >= 1.0:
                assert op is not None
                applied = operator_writes(op).get(("apply", "Deployment"), 0)
                last_scrape = time.monotonic()
            return applied

        # -- create
        cpu0 = cpu_seconds(pid)
        plane0, writes0 = component_cpu(local), api_writes(kubeconfig)
        started = time.monotonic()
        create_in_batches(kubeconfig, per_agent, batch=1000)
        result.created_s = time.monotonic() - started

        def all_ready() -> bool:
            now = time.monotonic() - started
            if math.isnan(result.children_s) and deployments_applied() >= n:
                result.children_s = now
            ready = sum(agent_ready(a) for a in agents.items())
            if ready * 2 >= n and math.isnan(result.half_s):
                result.half_s = now
            return ready == n

        poll(all_ready, timeout, interval, f"{n} agents Ready")
        result.operator_s = time.monotonic() - started
        result.create_cpu_s = cpu_seconds(pid) - cpu0
        result.create_cpu = cpu_delta(component_cpu(local), plane0)
        result.create_api_writes = count_delta(api_writes(kubeconfig), writes0)

        # -- rollout: one edit of the provider every agent uses
        old_hash = {
            d["metadata"]["name"]: (d["spec"]["template"]["metadata"].get("annotations") or {}).get(
                CONFIG_HASH_ANNOTATION
            )
            for d in deployments.items()
        }
        events_before = {e["metadata"]["name"] for e in get_items(kubeconfig, namespace, "events")}
        not_ready: set[str] = set()
        cpu0 = cpu_seconds(pid)
        plane0, writes0 = component_cpu(local), api_writes(kubeconfig)
        started = time.monotonic()
        kubectl(
            kubeconfig, "patch", "llmprovider", "upstream", "-n", namespace, "--type=merge",
            "-p", json.dumps({"spec": {"defaultModel": "m2"}}),
        )  # fmt: skip

        def rolled() -> bool:
            if math.isnan(result.rollout_children_s) and deployments_applied() >= 2 * n:
                result.rollout_children_s = time.monotonic() - started
            seen = agents.items()
            not_ready.update(a["metadata"]["name"] for a in seen if not agent_ready(a))
            deps = deployments.items()
            return (
                len(deps) == n
                and all(deployment_rolled(d, old_hash.get(d["metadata"]["name"])) for d in deps)
                and all(agent_ready(a) for a in seen)
            )

        poll(rolled, timeout, interval, f"{n} agents rolled")
        result.rollout_s = time.monotonic() - started
        result.rollout_cpu_s = cpu_seconds(pid) - cpu0
        result.rollout_cpu = cpu_delta(component_cpu(local), plane0)
        result.rollout_api_writes = count_delta(api_writes(kubeconfig), writes0)
        result.rollout_not_ready_agents = len(not_ready)
        events = get_items(kubeconfig, namespace, "events")
        result.rollout_not_ready_events = sum(
            1 for e in events if e["metadata"]["name"] not in events_before and e.get("reason") == "NotReady"
        )
        result.rss_mib, result.peak_rss_mib = rss_mib(pid)
        time.sleep(SETTLE_S)
        result.settled_rss_mib = rss_mib(pid)[0]
        writes = operator_writes(op)
        result.writes = {f"{verb} {kind}": count for (verb, kind), count in sorted(writes.items())}
        result.events_counted = writes.get(("create", "Event"), 0)
        result.events_posted = sum(
            1 for e in events if (e.get("source") or {}).get("component") == REPORTING_COMPONENT
        )
    except Exception as exc:
        if op is not None and not op.alive:
            code = op.process.returncode if op.process is not None else None
            raise BenchError(
                f"the operator exited (code {code}, {exc!r}); its last log lines:\n{op.tail()}"
            ) from exc
        raise
    finally:
        agents.close()
        deployments.close()
        if op is not None:
            op.terminate()
        local.stop()


def print_repeats(results: list[SizeResult]) -> None:
    """For each N measured more than once: the median and the range of the ratios, since one run
    on a shared 2-core machine moves by 0.2x with the same code."""
    by_n: dict[int, list[SizeResult]] = {}
    for r in results:
        if not r.error:
            by_n.setdefault(r.n, []).append(r)
    repeated = {n: runs for n, runs in by_n.items() if len(runs) > 1}
    if not repeated:
        return
    print("\nRepeated sizes (each run has its own floor)\n")
    for n, runs in repeated.items():
        ratios = sorted(r.ratio for r in runs)
        rollouts = sorted(r.rollout_ratio for r in runs)
        cpu = sorted(r.create_cpu_s for r in runs)
        rss = sorted(r.rss_mib for r in runs)
        print(
            f"- N={n}, {len(runs)} runs: ratio median {statistics.median(ratios):.2f}x "
            f"({', '.join(f'{x:.2f}' for x in ratios)}); rollout / create median "
            f"{statistics.median(rollouts):.2f}x; operator CPU-s median {statistics.median(cpu):.1f}; "
            f"RSS at end of rollout median {statistics.median(rss):.0f} MiB ({', '.join(f'{x:.0f}' for x in rss)})"
        )


def main() -> int:
    """Run every size and print the table (JSON on the last line)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        default="100,300,1000",
        help="comma-separated N (repeat one to measure it again: 1000,1000,1000)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="per phase")
    parser.add_argument(
        "--interval",
        type=float,
        default=0.25,
        help="seconds between checks of the watched agents and Deployments (in memory)",
    )
    parser.add_argument("--log-dir", type=Path, help="keep the operator's logs here (default: discarded)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    results: list[SizeResult] = []
    with tempfile.TemporaryDirectory(prefix="sentient-scale-") as tmp:
        for n in sizes:
            result = SizeResult(n, load=[round(x, 2) for x in os.getloadavg()])
            try:
                measure_floor(result, args.timeout, args.interval)
                measure_operator(result, args.timeout, args.interval, args.log_dir or Path(tmp))
            except BenchError as exc:
                result.error = str(exc)
            result.load += [round(x, 2) for x in os.getloadavg()]
            results.append(result)
            print(json.dumps({**result.__dict__, "ratio": round(result.ratio, 2)}), flush=True)

    cores = os.cpu_count()
    print(
        f"\noperator at scale, local control plane, {cores} cores (load averages 1/5/15 min before and after each N)\n"
    )
    print(
        "| N | floor (half) | operator (half) | ratio | children applied | CPU-s (create) | RSS / peak / settled MiB | rollout (children applied) | rollout / create | CPU-s (rollout) | Ready=False in rollout | NotReady Events | Events counted / posted | load before -> after |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.n} | {r.floor_s:.1f} s ({r.floor_half_s:.1f} s) | {r.operator_s:.1f} s ({r.half_s:.1f} s) "
            f"| {r.ratio:.2f}x | {r.children_s:.1f} s | {r.create_cpu_s:.1f} "
            f"| {r.rss_mib:.0f} / {r.peak_rss_mib:.0f} / {r.settled_rss_mib:.0f} | {r.rollout_s:.1f} s ({r.rollout_children_s:.1f} s) "
            f"| {r.rollout_ratio:.2f}x "
            f"| {r.rollout_cpu_s:.1f} | {r.rollout_not_ready_agents} | {r.rollout_not_ready_events} "
            f"| {r.events_counted} / {r.events_posted} | {'/'.join(map(str, r.load[:3]))} -> {'/'.join(map(str, r.load[3:]))} |"
        )
    print(
        "\nWhere the time went: CPU-seconds of each control-plane process, and the apiserver's write requests, per phase\n"
    )
    for r in results:
        for phase, cpu, writes in (
            ("floor", r.floor_cpu, r.floor_api_writes),
            ("operator create", {**r.create_cpu, "operator": round(r.create_cpu_s, 1)}, r.create_api_writes),
            ("rollout", {**r.rollout_cpu, "operator": round(r.rollout_cpu_s, 1)}, r.rollout_api_writes),
        ):
            cpu_text = ", ".join(f"{k} {v}" for k, v in cpu.items())
            writes_text = ", ".join(f"{k} {v}" for k, v in writes.items())
            print(f"- N={r.n} {phase}: CPU-s {cpu_text}; writes {sum(writes.values())}: {writes_text}")
    print("\nThe bench's own creates (kubectl create, one request at a time) and what came after them\n")
    for r in results:
        print(
            f"- N={r.n} floor: {4 * r.n} children created in {r.floor_created_s:.1f} s, every Deployment "
            f"Available {r.floor_s - r.floor_created_s:.1f} s later; operator: {2 * r.n} agents and "
            f"API-key Secrets created in {r.created_s:.1f} s, every agent Ready {r.operator_s - r.created_s:.1f} s later"
        )
    print_repeats(results)
    for r in results:
        if r.error:
            print(f"  N={r.n}: {r.error}")
    print(json.dumps([{**r.__dict__, "ratio": r.ratio} for r in results]))
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
