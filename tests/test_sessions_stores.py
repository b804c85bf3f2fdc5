"""One contract, three stores: memory, a real Redis and a real PostgreSQL behave alike.

Each test runs once per store. "Two replicas" are two store objects on one backend (for the
memory store, which is per process, the same object). Expiry is real time with a 1 s TTL, the
smallest the shared stores keep (Redis EXPIRE and the PostgreSQL store count whole seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import pytest

from agent_runtime.sessions import (
    MAX_SESSION_KEY_LENGTH,
    MemorySessionStore,
    OwnedSessions,
    RedisSessionStore,
    SessionStore,
    Turn,
)
from agent_runtime.sessions.postgres import PostgresSessionStore
from tests.support.postgres_server import PostgresServer, postgres_or_skip
from tests.support.redis_server import RedisServer, redis_or_skip

STORES = ["memory", "redis", "postgres"]


@dataclass
class Backends:
    """Servers started lazily, once per module, only for the stores a test run selects."""

    redis: RedisServer | None = None
    postgres: PostgresServer | None = None


@pytest.fixture(scope="module")
def backends() -> Iterator[Backends]:
    found = Backends()
    with contextlib.ExitStack() as stack:
        found.__dict__["_stack"] = stack
        yield found


def _redis(backends: Backends) -> RedisServer:
    if backends.redis is None:
        backends.redis = backends.__dict__["_stack"].enter_context(redis_or_skip())
    return backends.redis


def _postgres(backends: Backends) -> PostgresServer:
    if backends.postgres is None:
        backends.postgres = backends.__dict__["_stack"].enter_context(postgres_or_skip())
    return backends.postgres


Factory = Callable[..., SessionStore]


@pytest.fixture(params=STORES)
async def replicas(request: pytest.FixtureRequest, backends: Backends) -> AsyncIterator[Factory]:
    """A function making store replicas of the parametrized kind on one backend (fresh keys/table)."""
    kind = request.param
    made: list[SessionStore] = []
    shared: dict[tuple[float, int], MemorySessionStore] = {}
    namespace = uuid.uuid4().hex[:12]
    redis_url = _redis(backends).url if kind == "redis" else ""
    dsn = _postgres(backends).dsn if kind == "postgres" else ""

    def make(ttl: float = 60, max_turns: int = 3) -> SessionStore:
        store: SessionStore
        if kind == "memory":
            store = shared.setdefault((ttl, max_turns), MemorySessionStore(ttl, max_turns))
        elif kind == "redis":
            store = RedisSessionStore.from_url(redis_url, ttl, max_turns, prefix=f"test:{namespace}:")
        else:
            store = PostgresSessionStore(dsn, ttl, max_turns, prefix="agent:", table_name=f"s_{namespace}")
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()


def _wire(turns: list[Turn]) -> list[tuple[str, str]]:
    return [(t.role, t.content) for t in turns]


async def test_history_is_shared_by_replicas_and_bounded(replicas: Factory) -> None:
    store, other = replicas(), replicas()
    await store.append("s1", [Turn("user", "1"), Turn("assistant", "2")])
    await other.append("s1", [Turn("user", "3"), Turn("assistant", "4")])
    assert _wire(await other.get("s1")) == [("assistant", "2"), ("user", "3"), ("assistant", "4")]
    assert _wire(await store.get("s1")) == _wire(await other.get("s1"))
    assert await store.get("unknown") == []


async def test_one_append_longer_than_the_bound_keeps_its_last_turns(replicas: Factory) -> None:
    store = replicas(max_turns=2)
    await store.append("long", [Turn("user", str(i)) for i in range(5)])
    assert [t.content for t in await store.get("long")] == ["3", "4"]


async def test_expiry_counts_from_the_last_append_and_a_late_append_starts_afresh(
    replicas: Factory,
) -> None:
    store = replicas(ttl=1)
    await store.append("e", [Turn("user", "old")])
    await asyncio.sleep(0.5)
    # A read does not extend the session.
    assert [t.content for t in await store.get("e")] == ["old"]
    await asyncio.sleep(0.8)
    assert await store.get("e") == []
    await store.append("e", [Turn("user", "new")])
    assert [t.content for t in await store.get("e")] == ["new"]


async def test_an_append_extends_the_session(replicas: Factory) -> None:
    store = replicas(ttl=1)
    await store.append("x", [Turn("user", "a")])
    await asyncio.sleep(0.6)
    await store.append("x", [Turn("user", "b")])
    await asyncio.sleep(0.6)
    assert [t.content for t in await store.get("x")] == ["a", "b"]


async def test_invalid_ids_are_neither_read_nor_stored(replicas: Factory) -> None:
    store = replicas()
    too_long = "k" * (MAX_SESSION_KEY_LENGTH + 1)
    for bad in ("", too_long):
        await store.append(bad, [Turn("user", "x")])
        assert await store.get(bad) == []
    await store.append("empty-append", [])
    assert await store.get("empty-append") == []


async def test_any_text_round_trips(replicas: Factory) -> None:
    store = replicas(max_turns=10)
    odd = [
        "quote ' \" and \\ backslash",
        "line\nbreak\ttab",
        "nul \x00 char",
        "emoji \U0001f600 ü",
        "'); DROP",
    ]
    await store.append("odd", [Turn("user", text) for text in odd])
    assert [t.content for t in await store.get("odd")] == odd


async def test_concurrent_appends_lose_nothing(replicas: Factory) -> None:
    stores = [replicas(max_turns=100) for _ in range(2)]
    await asyncio.gather(*(stores[i % 2].append("busy", [Turn("user", str(i))]) for i in range(40)))
    assert sorted(int(t.content) for t in await stores[0].get("busy")) == list(range(40))


async def test_owners_never_see_each_others_sessions(replicas: Factory) -> None:
    store = replicas()
    alice, bob = OwnedSessions(store, "apiKey", "alice"), OwnedSessions(store, "apiKey", "bob")
    await alice.append("same-id", [Turn("user", "alice's secret")])
    assert await bob.get("same-id") == []
    await bob.append("same-id", [Turn("user", "bob's")])
    assert [t.content for t in await alice.get("same-id")] == ["alice's secret"]
