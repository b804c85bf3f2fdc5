"""Fault scenarios against the operator on the local control plane (used by bench/faults.py and e2e).

Each scenario starts from a converged fleet (``e2e.fleet``), injects one fault, and measures the
time until the fleet is converged again: every agent Ready for its current generation, exactly one
child of each kind per agent, no orphan. The operator must recover by itself: a scenario records
whether its process had to be restarted (only the kill scenario restarts it, on purpose).

- ``kill_during_create``: SIGKILL the operator while N agents are being created, start a new one;
- ``apiserver_down``: stop kube-apiserver for ``outage`` seconds, edit an agent once it is back;
- ``etcd_down``: the same with etcd;
- ``delete_deployments``: delete ``k`` child Deployments at once.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from e2e import fleet, tools
from e2e.cluster import LocalCluster
from e2e.operator_proc import OperatorProcess

REPO = Path(__file__).resolve().parent.parent


class FaultError(RuntimeError):
    """A scenario that did not recover (the message says how)."""


@dataclass
class FaultResult:
    """What one scenario measured."""

    name: str
    converge_s: float
    operator_restarted: bool
    duplicates: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    detail: str = ""

    @property
    def clean(self) -> bool:
        """No duplicate and no orphaned child."""
        return not self.duplicates and not self.orphans


@dataclass
class FaultLab:
    """A local control plane, a namespace with a fleet, and the operator serving it."""

    cluster: LocalCluster
    namespace: str
    agents: int
    workdir: Path
    operator: OperatorProcess | None = None
    operators_started: int = 0

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        """kubectl against the lab's cluster; stdout."""
        proc = subprocess.run(
            [str(tools.bin_dir() / "kubectl"), "--kubeconfig", str(self.cluster.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def start_operator(self) -> OperatorProcess:
        """Start an operator (leader election on, short lease, as in a pod) and wait until it leads."""
        self.operators_started += 1
        op = OperatorProcess(
            str(self.cluster.kubeconfig),
            [self.namespace],
            identity=f"faults-{self.operators_started}",
            log_path=self.workdir / f"operator-{self.operators_started}.log",
        ).start()
        op.wait_for_log("_startup' succeeded", timeout=120)
        self.operator = op
        return op

    def apply_fleet(self) -> None:
        """Create (or re-apply) the fleet's objects."""
        docs = fleet.manifests(self.namespace, self.agents)
        self.kubectl("apply", "-f", "-", input="\n---\n".join(yaml.safe_dump(d) for d in docs))

    def wait_converged(self, timeout: float) -> float:
        """Seconds until every agent is Ready with exactly one child of each kind and no orphan."""
        started = time.monotonic()
        want = {fleet.agent_name(i) for i in range(self.agents)}
        while True:
            ready = fleet.ready_agents(self.kubectl, self.namespace)
            if ready >= want:
                counts, orphans = fleet.child_census(self.kubectl, self.namespace)
                complete = all(
                    counts[(kind, agent)] >= 1
                    for agent in want
                    for kind in ("Deployment", "Service", "ConfigMap", "Secret")
                )
                if complete and not orphans and not fleet.duplicates(counts):
                    return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise FaultError(
                    f"not converged after {timeout:.0f} s: {len(ready & want)}/{len(want)} Ready\n"
                    + (self.operator.tail(20) if self.operator else "")
                )
            time.sleep(0.5)

    def result(self, name: str, converge_s: float, restarted: bool, detail: str = "") -> FaultResult:
        """A FaultResult with the child census taken now."""
        counts, orphans = fleet.child_census(self.kubectl, self.namespace)
        return FaultResult(name, round(converge_s, 2), restarted, fleet.duplicates(counts), orphans, detail)

    def operator_pid(self) -> int | None:
        """The running operator's pid."""
        op = self.operator
        return op.process.pid if op is not None and op.process is not None and op.alive else None


@contextmanager
def fault_lab(agents: int, workdir: Path) -> Iterator[FaultLab]:
    """A fresh local control plane with the CRDs and an empty namespace (operator not started)."""
    with LocalCluster.create(nodes=2) as cluster:
        lab = FaultLab(cluster, "faults", agents, workdir)
        lab.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        lab.kubectl("wait", "--for=condition=Established", "crd", "--all")
        lab.kubectl("create", "namespace", lab.namespace)
        try:
            yield lab
        finally:
            if lab.operator is not None:
                lab.operator.terminate()


def kill_during_create(lab: FaultLab, timeout: float) -> FaultResult:
    """SIGKILL the operator while the fleet is being created; a new operator finishes the job."""
    lab.start_operator()
    lab.apply_fleet()
    # Kill it mid-way: once some, not all, agents are Ready (or after 1 s at the most).
    deadline = time.monotonic() + 1.0
    while (
        time.monotonic() < deadline and len(fleet.ready_agents(lab.kubectl, lab.namespace)) < lab.agents // 4
    ):
        time.sleep(0.05)
    ready_at_kill = len(fleet.ready_agents(lab.kubectl, lab.namespace))
    assert lab.operator is not None
    lab.operator.kill()
    restarted = time.monotonic()
    lab.start_operator()
    lab.wait_converged(timeout)
    return lab.result(
        "kill -9 during create",
        time.monotonic() - restarted,
        True,
        f"{ready_at_kill}/{lab.agents} Ready at the kill; time from the restart",
    )


def component_down(lab: FaultLab, component: str, outage: float, timeout: float) -> FaultResult:
    """Stop one control-plane component for ``outage`` s; then edit an agent and wait for convergence."""
    pid = lab.operator_pid()
    assert pid is not None, "the fleet must be running"
    lab.cluster.stop_component(component, kill=component == "etcd")
    time.sleep(outage)
    lab.cluster.start_component(component)
    back = time.monotonic()
    if lab.operator is not None and not lab.operator.alive:
        code = lab.operator.process.returncode if lab.operator.process else None
        raise FaultError(f"the operator exited (code {code}) during the {component} outage")
    # An edit made right after the outage must be acted on: the operator's watches came back.
    lab.kubectl(
        "patch",
        "sentientagent",
        fleet.agent_name(0),
        "-n",
        lab.namespace,
        "--type=merge",
        "-p",
        '{"spec": {"systemPrompt": "after the outage"}}',
    )
    lab.wait_converged(timeout)
    converged = time.monotonic() - back
    restarted = lab.operator_pid() != pid
    return lab.result(f"{component} down {outage:.0f} s", converged, restarted, "time from the restart")


def delete_deployments(lab: FaultLab, count: int, timeout: float) -> FaultResult:
    """Delete ``count`` child Deployments at once; time until all are back and Ready."""
    pid = lab.operator_pid()
    names = [fleet.agent_name(i) for i in range(min(count, lab.agents))]
    started = time.monotonic()
    lab.kubectl("delete", "deployment", "-n", lab.namespace, "--wait=false", *names)
    lab.wait_converged(timeout)
    return lab.result(
        f"delete {len(names)} Deployments", time.monotonic() - started, lab.operator_pid() != pid
    )
