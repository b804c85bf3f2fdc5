"""What the response cache costs per request, in process (no HTTP, no other load in the figure).

For a request of a few messages and a streamed answer of ``--pieces`` pieces, the time of each
step a miss adds (the key, a lookup that misses, recording the events, encoding and storing the
entry) and of a hit (the key, the lookup, decoding, replaying the events), on the memory
backend. ``bench/runtime.py --cache off|miss|hit`` gives the same over HTTP, where the load of a
shared machine blurs differences this small.

Run: ``PYTHONPATH=operator:. python bench/cache.py [--pieces 16] [--iterations 20000]``
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "operator"), str(ROOT)]

from agent_runtime.cache.entry import Entry, StreamRecording  # noqa: E402
from agent_runtime.cache.keys import config_fingerprint, request_digest  # noqa: E402
from agent_runtime.cache.store import build_cache  # noqa: E402
from agent_runtime.config import CacheRuntimeConfig  # noqa: E402
from agent_runtime.llm import ChatMessage, ChatRequest, Completed, LLMEvent, TextDelta, Usage  # noqa: E402
from tests.support.runtime import make_config  # noqa: E402


def _time(label: str, iterations: int, step: Callable[[int], Awaitable[object]]) -> None:
    async def run() -> float:
        for i in range(min(iterations, 1000)):
            await step(i)
        start = time.perf_counter()
        for i in range(iterations):
            await step(i)
        return time.perf_counter() - start

    elapsed = asyncio.run(run())
    print(f"{label:<44} {elapsed / iterations * 1e6:>8.2f} us")


def main() -> None:
    """Print the cost of each step of a miss and of a hit."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pieces", type=int, default=16, help="pieces of the streamed answer")
    parser.add_argument("--iterations", type=int, default=20_000)
    args = parser.parse_args()
    n = args.iterations
    fingerprint = config_fingerprint(make_config())
    messages = [ChatMessage("system", "You are a helpful assistant.")]
    messages += [
        ChatMessage("user", f"Question {i}: what does the cache keep, and for how long?") for i in range(4)
    ]
    request = ChatRequest(messages=messages, max_tokens=256, temperature=0.2)
    events: list[LLMEvent] = [TextDelta(f"word{i} ") for i in range(args.pieces)]
    events += [Usage(120, args.pieces), Completed("default/fake", "fake-model", "stop")]
    cache = build_cache(CacheRuntimeConfig(), lambda _: None)
    assert cache is not None
    entry = Entry(tuple(f"word{i} " for i in range(args.pieces)), (120, args.pieces), "p", "m", "stop")

    async def key(i: int) -> object:
        return request_digest(fingerprint, request, "stream", "")

    async def lookup_miss(i: int) -> object:
        return await cache.lookup(f"absent-{i}")

    async def record(i: int) -> object:
        recording = StreamRecording()
        for event in events:
            recording.add(event)
        return recording.entry()

    async def store(i: int) -> object:
        await cache.store(f"k{i % 1000}", entry)
        return None

    async def hit(i: int) -> object:
        found = await cache.lookup(f"k{i % 1000}")
        assert found is not None
        return found.events()

    print(f"request: {len(messages)} messages; answer: {args.pieces} pieces; memory backend")
    _time("key (canonical JSON + SHA-256)", n, key)
    _time("lookup that misses", n, lookup_miss)
    _time("record the stream's events", n, record)
    _time("encode + store (LRU, bounds)", n, store)
    _time("lookup that hits + decode + replay events", n, hit)


if __name__ == "__main__":
    main()
