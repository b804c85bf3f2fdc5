"""Cost of the dev-mode capture bus (agent_runtime/devbus.py) per request, off and on.

Serves ``GET /live`` and ``POST /assist`` (an agent that streams a few chunks, no upstream)
through the runtime's real ASGI application and request pipeline, in process, with no
network in between, so that the pipeline's own cost is what is measured:

- ``off``: the production runtime (``dev=False``): the bus hooks read ``devbus.BUS``, find
  ``None`` and do nothing;
- ``on``: ``dev=True`` as under ``sentient dev``: every hook publishes into the ring buffer
  (no reader attached; a reader costs the dashboard's process, not the runtime's hot path).

Each figure is the median of ``--rounds`` rounds of ``--requests`` requests (microseconds a
request); off and on rounds alternate. A third line times the off-path check itself (``bus = devbus.BUS; if bus is not
None``) with timeit: that is all dev mode costs a production runtime, a few times a request.

Run: ``PYTHONPATH=operator:. python bench/devbus.py [--requests 5000] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "operator"), str(ROOT)]

from agent_runtime import devbus  # noqa: E402
from agent_runtime.app import AgentRuntime  # noqa: E402
from agent_runtime.audit import AuditLog  # noqa: E402
from agent_runtime.reload import CredentialFiles  # noqa: E402
from tests.support.runtime import make_config  # noqa: E402

AGENT = "bench_devbus_agent:Chunks"
AGENT_SOURCE = """
from agent_runtime.sdk import AbstractAgent


class Chunks(AbstractAgent):
    async def assist(self, session, query, response_handler):
        stream = response_handler.create_text_stream("response")
        for word in ("one ", "two ", "three"):
            await stream.emit_chunk(word)
        await stream.complete()
        await response_handler.complete()
"""


async def _request(app: AgentRuntime, method: str, path: str, body: bytes) -> None:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        return None

    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "path": path,
        "query_string": b"",
        "headers": [(b"host", b"bench"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
    }
    await app(scope, receive, send)


async def _measure(app: AgentRuntime, method: str, path: str, body: bytes, n: int) -> float:
    """Microseconds a request, over ``n`` requests one after the other."""
    started = time.perf_counter()
    for _ in range(n):
        await _request(app, method, path, body)
    return (time.perf_counter() - started) / n * 1e6


async def _runtime(dev: bool, tmp: Path) -> AgentRuntime:
    config = make_config(agent_class=AGENT, api_keys=False, anonymous=True)
    # The audit chain goes to a file: its lines on stdout would be measured too.
    audit = AuditLog(b"bench-audit-key", tmp / f"audit-{dev}.log")
    app = AgentRuntime(config, CredentialFiles(tmp), audit=audit, dev=dev)
    await app.startup()
    return app


async def _run(args: argparse.Namespace, tmp: Path) -> None:
    body = b'{"query": {"id": "q1", "prompt": "hello"}}'
    print(f"{'path':<14}{'off (us/req)':>14}{'on (us/req)':>14}{'on - off':>10}")
    apps = {}
    for dev in (False, True):
        if not dev:
            devbus.disable()
        apps[dev] = await _runtime(dev, tmp)
    for method, path, payload in (("GET", "/live", b""), ("POST", "/assist", body)):
        figures: dict[bool, list[float]] = {False: [], True: []}
        # Off and on rounds alternate, so that a busy moment of a shared machine hits both.
        for round_ in range(args.rounds + 1):
            for dev in (False, True):
                # The bus is process-wide: off means no bus at all while the off runtime serves.
                if dev:
                    devbus.enable()
                else:
                    devbus.disable()
                took = await _measure(apps[dev], method, path, payload, args.requests)
                if round_:  # the first round warms up
                    figures[dev].append(took)
        off, on = statistics.median(figures[False]), statistics.median(figures[True])
        print(f"{path:<14}{off:>14.1f}{on:>14.1f}{on - off:>10.1f}")
    devbus.disable()
    for app in apps.values():
        await app.shutdown()
    runs = 1_000_000
    names = {"devbus": devbus}
    check = min(
        timeit.repeat("bus = devbus.BUS\nif bus is not None: pass", globals=names, number=runs, repeat=5)
    )
    empty = min(timeit.repeat("pass", globals=names, number=runs, repeat=5))
    print(
        f"off-path hook check: {(check - empty) / runs * 1e9:.1f} ns each (best of 5 x {runs:,}, loop subtracted)"
    )


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sentient-bench-devbus-") as tmp:
        (Path(tmp) / "bench_devbus_agent.py").write_text(AGENT_SOURCE)
        sys.path.insert(0, tmp)
        asyncio.run(_run(args, Path(tmp)))


if __name__ == "__main__":
    main()
