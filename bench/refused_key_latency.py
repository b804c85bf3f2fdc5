"""How long until a refused provider key shows on the agent, and until a good one clears it.

Runs on a local control plane (or ``--kubeconfig`` / ``E2E_KUBECONFIG``) with the operator at its
default settings (``SENTIENT_CREDENTIAL_CHECK_SECONDS`` 15 unless ``--interval``), the project's
fake OpenAI upstream (it checks the key on /models) and one agent. Each round measures, polling
the agent's status every 0.2 s:

- ``secret-wrong``: a wrong key written into the provider's Secret -> agent
  ``CredentialsValid=False/Unauthorized`` (the check runs at once on a changed key);
- ``secret-fixed``: the right key put back -> ``CredentialsValid=True``;
- ``upstream-revoked``: the upstream starts refusing the bound key, nothing changes in the
  cluster -> ``Unauthorized`` (found by the periodic check: at most one interval plus a request);
- ``upstream-restored``: the upstream accepts it again -> ``True``.

    PYTHONPATH=operator:. python bench/refused_key_latency.py [--rounds 3] [--interval 15]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "operator"), str(REPO)]

from agent_runtime.testing import FakeUpstream  # noqa: E402
from e2e.agents import PROVIDER_KEY, agent, callers, provider, wait_ready  # noqa: E402
from e2e.cluster import Cluster, LocalCluster  # noqa: E402
from e2e.operator_proc import running_operator  # noqa: E402
from e2e.resources import apply, condition, get  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402

CRDS = REPO / "crds"


@contextlib.contextmanager
def cluster(explicit: str | None) -> Iterator[Cluster]:
    """An existing cluster, or a local control plane started for the run."""
    path = explicit or os.environ.get("E2E_KUBECONFIG")
    if path:
        yield Cluster.from_kubeconfig(path)
        return
    local = LocalCluster.create()
    local.start()
    try:
        yield Cluster.from_kubeconfig(str(local.kubeconfig), local=local)
    finally:
        local.stop()


def timed(what: str, ok: Callable[[], bool]) -> float:
    """Seconds until ``ok()`` holds (polled every 0.2 s, up to 120 s)."""
    started = time.monotonic()
    wait_for(ok, timeout=120, interval=0.2, what=what)
    return time.monotonic() - started


def main() -> int:
    """Measure and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--interval", type=float, default=None, help="SENTIENT_CREDENTIAL_CHECK_SECONDS")
    parser.add_argument("--kubeconfig", default=None)
    args = parser.parse_args()
    env = {} if args.interval is None else {"SENTIENT_CREDENTIAL_CHECK_SECONDS": str(args.interval)}
    figures: dict[str, list[float]] = {}
    with cluster(args.kubeconfig) as c, FakeUpstream("openai", api_key=PROVIDER_KEY) as upstream:
        c.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
        namespace = f"bench-refused-{secrets.token_hex(3)}"
        c.kubectl("create", "namespace", namespace)
        try:
            with running_operator(c, namespace, env=env):
                docs = provider(namespace, upstream.endpoint)
                apply(c, *docs, callers(namespace), agent(namespace))
                wait_ready(c, namespace)

                def agent_valid(status: str) -> Callable[[], bool]:
                    return lambda: (
                        condition(get(c, "sentientagent", "helper", namespace), "CredentialsValid").get(
                            "status"
                        )
                        == status
                    )

                # The agent shows CredentialsValid once there is something to say; the provider at once.
                timed(
                    "the first check",
                    lambda: (
                        condition(get(c, "llmprovider", "fake", namespace), "CredentialsValid").get("status")
                        == "True"
                    ),
                )
                for round_ in range(1, args.rounds + 1):
                    docs[0]["stringData"] = {"apiKey": f"sk-wrong-{round_}"}
                    apply(c, docs[0])
                    figures.setdefault("secret-wrong", []).append(timed("Unauthorized", agent_valid("False")))
                    docs[0]["stringData"] = {"apiKey": PROVIDER_KEY}
                    apply(c, docs[0])
                    figures.setdefault("secret-fixed", []).append(timed("Valid", agent_valid("True")))
                    upstream.set_api_key(f"sk-upstream-{round_}")
                    figures.setdefault("upstream-revoked", []).append(
                        timed("Unauthorized", agent_valid("False"))
                    )
                    upstream.set_api_key(PROVIDER_KEY)
                    figures.setdefault("upstream-restored", []).append(timed("Valid", agent_valid("True")))
                    print(
                        f"round {round_}: "
                        + "  ".join(f"{name} {values[-1]:.1f}s" for name, values in figures.items()),
                        flush=True,
                    )
        finally:
            c.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    interval = args.interval if args.interval is not None else 15.0
    print(f"\nagent condition latency (check interval {interval:g} s, {args.rounds} rounds)")
    for name, values in figures.items():
        print(f"  {name:<18} median {statistics.median(values):5.1f} s   max {max(values):5.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
