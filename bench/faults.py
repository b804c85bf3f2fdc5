"""Faults with figures: how the operator recovers, on a fresh local control plane.

Scenarios (see ``e2e/faults.py``), in order, on one fleet of ``--agents`` agents:

1. SIGKILL the operator while the agents are being created, start a new one;
2. stop kube-apiserver for ``--outage`` seconds;
3. stop etcd for ``--outage`` seconds;
4. delete ``--delete`` child Deployments at once.

For each: the time to converge again (every agent Ready, one child of each kind per agent, no
orphan), whether the operator process had to be restarted (only scenario 1 restarts it, on
purpose), and any duplicate or orphaned child. Bounded: each scenario gives up after
``--timeout`` seconds. Loopback only.

    python bench/faults.py --agents 100 --outage 30
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "operator"), str(REPO)]

from e2e import faults  # noqa: E402


def main() -> int:
    """Run the scenarios and print a table (JSON on the last line)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--outage", type=float, default=30.0, help="seconds a component stays down")
    parser.add_argument("--delete", type=int, default=20, help="child Deployments deleted at once")
    parser.add_argument("--timeout", type=float, default=600.0, help="per scenario")
    args = parser.parse_args()

    results: list[faults.FaultResult] = []
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="sentient-faults-") as tmp,
        faults.fault_lab(args.agents, Path(tmp)) as lab,
    ):
        scenarios = [
            ("kill -9 during create", lambda: faults.kill_during_create(lab, args.timeout)),
            (
                f"kube-apiserver down {args.outage:.0f} s",
                lambda: faults.component_down(lab, "kube-apiserver", args.outage, args.timeout),
            ),
            (
                f"etcd down {args.outage:.0f} s",
                lambda: faults.component_down(lab, "etcd", args.outage, args.timeout),
            ),
            (
                f"delete {args.delete} Deployments",
                lambda: faults.delete_deployments(lab, args.delete, args.timeout),
            ),
        ]
        for name, run in scenarios:
            try:
                results.append(run())
            except faults.FaultError as exc:
                # Record the failure, then give the next scenario a running, converged operator.
                results.append(faults.FaultResult(name, float("nan"), True, detail=str(exc).splitlines()[0]))
                if lab.operator is None or not lab.operator.alive:
                    lab.start_operator()
                lab.wait_converged(args.timeout)

    print(
        f"\noperator faults, {args.agents} agents, local control plane ({time.monotonic() - started:.0f} s)\n"
    )
    print(f"| {'scenario':<28} | converged in | operator restarted | duplicates | orphans |")
    print(f"|{'-' * 30}|--------------|--------------------|------------|---------|")
    for r in results:
        restarted = (
            "yes (the fault)" if r.name.startswith("kill") else ("YES" if r.operator_restarted else "no")
        )
        print(
            f"| {r.name:<28} | {r.converge_s:>10.2f} s | {restarted:<18} | {len(r.duplicates):>10} | {len(r.orphans):>7} |"
        )
    print(json.dumps([r.__dict__ for r in results]))
    for r in results:
        if r.detail:
            print(f"  {r.name}: {r.detail}")
    bad = [r for r in results if not r.clean or (r.operator_restarted and not r.name.startswith("kill"))]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
