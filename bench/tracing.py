"""Tracing benchmark: the CPU one request's spans cost in the runtime, recorded or not.

Drives ``agent_runtime.tracing`` as the pipeline and the failover loop do for one request with
one upstream attempt (the SERVER span started from the caller's headers, the CLIENT span with
its GenAI attributes and its ``traceparent`` for the upstream, both ended) and prints the CPU
time per request: with ``samplingRatio`` 0 (only the trace context is made and passed on) and
1 (every span recorded and queued). The export itself (protobuf encoding, the HTTP call) runs
in the SDK's background thread; ``bench/runtime.py --tracing collector`` measures the whole
cost through the runtime against a real collector.

    PYTHONPATH=operator:. python bench/tracing.py [--requests 5000]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "operator")]

from agent_runtime.config import AgentInfo, LLMRuntimeConfig, ProviderConfig, TracingConfig  # noqa: E402
from agent_runtime.llm.entries import Entry, build_snapshot  # noqa: E402
from agent_runtime.llm.providers.base import StreamState  # noqa: E402
from agent_runtime.llm.types import ChatMessage, ChatRequest  # noqa: E402
from agent_runtime.tracing import Tracing, build_tracing  # noqa: E402


class _Exchange:
    """What the tracer reads of an exchange."""

    method = "POST"
    request_id = "01JBENCH0000000000000000000"
    headers: dict[str, str] = {}


def _entry() -> Entry:
    chain = [ProviderConfig(id="bench/p", type="openai", endpoint="http://127.0.0.1:9/v1", model="m")]
    return build_snapshot(LLMRuntimeConfig(chain=chain), {}, {}, time.monotonic).entries[0]


def _per_request(tracing: Tracing, entry: Entry, n: int) -> float:
    request = ChatRequest(messages=[ChatMessage("user", "Hello benchmark")], max_tokens=64)
    state = StreamState()
    state.input_tokens, state.output_tokens, state.finish_reason = 12, 16, "stop"
    ex = _Exchange()
    started = time.thread_time()  # this thread only: the exporter thread is not counted
    for _ in range(n):
        trace = tracing.start_request(ex, "/v1/chat/completions")  # type: ignore[arg-type]
        attempt = trace.attempt(entry, request, 1, 0, False)
        attempt.succeeded(state, ["Echo: Hello benchmark"])
        trace.end(200)
    return (time.thread_time() - started) / n


def main() -> None:
    """Print the CPU per request at sampling ratios 0 and 1."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    # The exporter fails on the closed port on purpose: its complaints are not the benchmark's.
    logging.getLogger("opentelemetry").setLevel(logging.CRITICAL)
    entry = _entry()
    print(f"{'samplingRatio':>13} | CPU per request (2 spans, export excluded)")
    for ratio in (0.0, 1.0):
        # A closed port and a queue as large as the run: nothing is dropped, nothing exported.
        config = TracingConfig(endpoint="http://127.0.0.1:9", sampling_ratio=ratio, max_queue_size=1_000_000)
        tracing = build_tracing(config, AgentInfo(name="bench"), lambda _: None)
        assert tracing is not None
        _per_request(tracing, entry, 200)  # warm-up
        print(f"{ratio:>13g} | {_per_request(tracing, entry, args.requests) * 1e6:8.1f} us")


if __name__ == "__main__":
    main()
