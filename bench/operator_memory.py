"""Operator memory: RSS with N agents and M unrelated Secrets in the same namespace.

Starts a local control plane (or uses ``--kubeconfig``), installs the CRDs, creates M Secrets
that no agent or provider references (``--secret-bytes`` of data each) and N agents (each with
its provider, API-key Secret and policy, as in ``bench/operator_idle.py``), starts the operator,
waits until every agent is Ready and the operator's write counter has settled, then prints the
operator's resident set size (VmRSS) and its peak (VmHWM) from /proc.

``--operator-root DIR`` runs the operator from another checkout's ``operator/`` tree (e.g. an
export of main, for a before/after figure); the cluster harness stays this checkout's.

    python bench/operator_memory.py --agents 100 --secrets 10000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "operator"), str(REPO)]

from bench.operator_idle import kubectl, operator_writes, prepare, ready_count  # noqa: E402
from e2e.fleet import manifests  # noqa: E402
from e2e.operator_proc import OperatorProcess  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402


def unrelated_secrets(namespace: str, count: int, size: int) -> list[dict[str, Any]]:
    """``count`` Opaque Secrets of ``size`` bytes of data each, referenced by nothing."""
    payload = "x" * size
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"unrelated-{i:05d}", "namespace": namespace, "labels": {"bench": "noise"}},
            "stringData": {"blob": payload},
        }
        for i in range(count)
    ]


def create_in_batches(kubeconfig: str, docs: list[dict[str, Any]], batch: int = 500) -> None:
    """``kubectl create`` of many objects in order, a batch per call (one List each, as JSON:
    cheap to write for the caller)."""
    for start in range(0, len(docs), batch):
        items = docs[start : start + batch]
        kubectl(
            kubeconfig,
            "create",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
        )


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB."""
    figures: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            figures[key] = int(value.split()[0])
    return figures


def main() -> int:
    """Run the measurement and print the figures (JSON on the last line)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--secrets", type=int, default=10_000)
    parser.add_argument("--secret-bytes", type=int, default=2048)
    parser.add_argument("--settle", type=float, default=15.0, help="quiet seconds before measuring")
    parser.add_argument("--kubeconfig", default=None, help="use this cluster instead of starting one")
    parser.add_argument("--operator-root", default=None, help="run the operator from DIR/operator")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for every agent Ready")
    args = parser.parse_args()

    local, kubeconfig, namespace = prepare(args.kubeconfig, "bench-mem")
    op: OperatorProcess | None = None
    try:
        started = time.monotonic()
        create_in_batches(kubeconfig, unrelated_secrets(namespace, args.secrets, args.secret_bytes))
        print(f"{args.secrets} unrelated Secrets created in {time.monotonic() - started:.1f}s", flush=True)
        kubectl(
            kubeconfig,
            "apply",
            "-f",
            "-",
            input="\n---\n".join(yaml.safe_dump(d) for d in manifests(namespace, args.agents)),
        )
        env = {"SENTIENT_LEADER_ELECTION": "false"}
        if args.operator_root:
            root = Path(args.operator_root).resolve()
            env["PYTHONPATH"] = f"{root / 'operator'}{os.pathsep}{root}"
        log = Path(tempfile.gettempdir()) / f"{namespace}-operator.log"
        op = OperatorProcess(kubeconfig, [namespace], identity="bench", env=env, log_path=log).start()
        op.wait_for_log("_startup' succeeded", timeout=120)
        started = time.monotonic()
        assert op.process is not None
        peak_before_ready = 0

        def all_ready() -> bool:
            nonlocal peak_before_ready
            peak_before_ready = max(peak_before_ready, memory_kib(op.process.pid)["VmRSS"])  # type: ignore[union-attr]
            return ready_count(kubeconfig, namespace) == args.agents

        wait_for(
            all_ready,
            timeout=args.timeout,
            interval=2,
            what="all agents Ready",
        )
        ready_s = time.monotonic() - started
        last = sum(operator_writes(op).values())
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < args.settle:
            time.sleep(2)
            now = sum(operator_writes(op).values())
            if now != last:
                last, quiet_since = now, time.monotonic()
        assert op.process is not None
        mem = memory_kib(op.process.pid)
        result = {
            "agents": args.agents,
            "unrelated_secrets": args.secrets,
            "secret_bytes": args.secret_bytes,
            "operator_root": str(args.operator_root or REPO),
            "agents_ready_s": round(ready_s, 1),
            "rss_mib": round(mem["VmRSS"] / 1024, 1),
            "peak_rss_mib": round(mem["VmHWM"] / 1024, 1),
        }
        print(json.dumps(result), flush=True)
        return 0
    finally:
        if op is not None:
            op.terminate()
        if local is not None:
            local.stop()


if __name__ == "__main__":
    sys.exit(main())
