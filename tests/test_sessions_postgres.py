"""The PostgreSQL session store against a real PostgreSQL: migrations, pool, outages, runtimes.

The store contract it shares with memory and Redis is in ``tests/test_sessions_stores.py``; here
is what only a database has: schema versions applied once however many replicas start together,
a bounded pool that refuses to queue forever, a database that goes away and comes back, the
sweeper, and two runtime processes continuing one conversation through one database.
"""

# The tests read the store's tables by their generated names.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from agent_runtime import metrics
from agent_runtime.config import SessionsRuntimeConfig
from agent_runtime.sessions import OwnedSessions, SessionStoreError, Turn, build_session_store
from agent_runtime.sessions.postgres import PostgresSessionStore, masked, secrets_of
from agent_runtime.sessions.postgres_migrations import LATEST, migrate
from agent_runtime.testing import FakeUpstream, wait_until
from tests.support.net import free_port
from tests.support.postgres_server import PostgresServer, postgres_or_skip
from tests.support.runtime import (
    InProcessRuntime,
    RuntimeFiles,
    ask_in_one_session,
    chain_entry,
    default_credentials,
    make_config,
    runtime_fleet,
)

KEY = "alice-secret-key"  # one of tests.support.runtime.DEFAULT_KEYS


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with postgres_or_skip() as pg:
        yield pg


def table() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def conn(server: PostgresServer) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(server.dsn)
    yield connection
    await connection.close()


# ----------------------------------------------------------------------------- migrations


async def test_migrations_apply_once_when_run_twice(conn: asyncpg.Connection) -> None:
    name = table()
    assert await migrate(conn, "public", name) == LATEST
    assert await migrate(conn, "public", name) == LATEST
    rows = await conn.fetch(f'SELECT version FROM "{name}_schema_version"')
    assert [r["version"] for r in rows] == list(range(1, LATEST + 1))


async def test_replicas_starting_together_migrate_once(
    server: PostgresServer, conn: asyncpg.Connection
) -> None:
    name = table()
    stores = [
        PostgresSessionStore(server.dsn, 60, 5, schema_name="team_a", table_name=name) for _ in range(6)
    ]
    try:
        # Six replicas, one fresh schema: the advisory lock queues them behind the first.
        await asyncio.gather(*(s.start() for s in stores))
        assert {s.schema_version for s in stores} == {LATEST}
        count = await conn.fetchval(f'SELECT count(*) FROM team_a."{name}_schema_version"')
        assert count == LATEST
        await stores[0].append("a", [Turn("user", "hi")])
        assert [t.content for t in await stores[5].get("a")] == ["hi"]
    finally:
        await asyncio.gather(*(s.aclose() for s in stores))


async def test_a_newer_schema_is_used_as_is(server: PostgresServer, conn: asyncpg.Connection) -> None:
    name = table()
    await migrate(conn, "public", name)
    await conn.execute(
        f"INSERT INTO \"{name}_schema_version\" (version, description) VALUES ({LATEST + 1}, 'later')"
    )
    store = PostgresSessionStore(server.dsn, 60, 5, table_name=name)
    try:
        await store.start()
        assert store.schema_version == LATEST + 1
        await store.append("s", [Turn("user", "still works")])
        assert len(await store.get("s")) == 1
    finally:
        await store.aclose()


# ----------------------------------------------------------------------------- pool


async def test_an_exhausted_pool_fails_fast_then_recovers(server: PostgresServer) -> None:
    store = PostgresSessionStore(server.dsn, 60, 5, table_name=table(), pool_size=1, timeout=0.5)
    try:
        await store.append("s", [Turn("user", "kept")])
        pool = store._pool
        held = await pool.acquire()
        started = time.monotonic()
        with pytest.raises(SessionStoreError, match="TimeoutError"):
            await store.get("s")
        # Waiting for a connection is bounded by the store's timeout, not forever.
        assert time.monotonic() - started < 3
        await pool.release(held)
        assert [t.content for t in await store.get("s")] == ["kept"]
    finally:
        await store.aclose()


async def test_many_concurrent_requests_share_a_small_pool(server: PostgresServer) -> None:
    store = PostgresSessionStore(server.dsn, 60, 200, table_name=table(), pool_size=2)
    try:
        await asyncio.gather(*(store.append(f"s{i % 5}", [Turn("user", str(i))]) for i in range(100)))
        sizes = [len(await store.get(f"s{i}")) for i in range(5)]
        assert sizes == [20] * 5
        assert store._pool.get_size() <= 2
    finally:
        await store.aclose()


# ----------------------------------------------------------------------------- outages


async def test_an_unreachable_database_fails_open_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    password = "pw-" + uuid.uuid4().hex
    dsn = f"postgresql://sentient:{password}@127.0.0.1:{free_port()}/postgres"
    store = PostgresSessionStore(dsn, 60, 5, table_name=table(), timeout=1.0)
    try:
        with caplog.at_level(logging.WARNING, logger="agent_runtime.sessions.postgres"):
            await store.start()  # the runtime starts anyway
        failed = {"store": "postgres", "operation": "load"}
        before = metrics.REGISTRY.get_sample_value("sentient_session_store_errors_total", failed) or 0
        owned = OwnedSessions(store, "apiKey", "alice")
        with pytest.raises(SessionStoreError) as raised:
            await owned.get("s")
        with pytest.raises(SessionStoreError):
            await owned.append("s", [Turn("user", "x")])
        assert metrics.REGISTRY.get_sample_value("sentient_session_store_errors_total", failed) == before + 1
        shown = caplog.text + str(raised.value) + repr(store)
        assert "not ready" in caplog.text
        assert password not in shown and dsn not in shown
    finally:
        await store.aclose()


async def test_a_silent_database_costs_concurrent_requests_one_timeout_not_one_each() -> None:
    # A listener that never answers: every connect attempt waits for its whole timeout.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        port = silent.getsockname()[1]
        store = PostgresSessionStore(
            f"postgresql://u:p@127.0.0.1:{port}/db", 60, 5, table_name=table(), timeout=1.0
        )
        try:
            started = time.monotonic()
            results = await asyncio.gather(*(store.get(f"s{i}") for i in range(10)), return_exceptions=True)
            assert all(isinstance(r, SessionStoreError) for r in results)
            # One connect timeout, then the others fail at once (not 10 x 1 s queued on the lock).
            assert time.monotonic() - started < 5
        finally:
            await store.aclose()


async def test_a_wrong_password_is_reported_without_it(
    server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-" + uuid.uuid4().hex
    dsn = server.dsn.replace(server.password, wrong)
    store = PostgresSessionStore(dsn, 60, 5, table_name=table())
    try:
        with caplog.at_level(logging.WARNING, logger="agent_runtime.sessions.postgres"):
            await store.start()
        assert "InvalidPasswordError" in caplog.text
        assert wrong not in caplog.text
    finally:
        await store.aclose()


def test_masking_covers_the_dsn_and_its_passwords() -> None:
    dsn = "postgresql://u:s3cr%40t@db:5432/app?password=other&sslmode=require"
    text = f"failed for {dsn} with s3cr%40t and other"
    assert masked(text, secrets_of(dsn)) == "failed for *** with *** and ***"


async def test_requests_recover_after_a_database_restart() -> None:
    with postgres_or_skip() as pg:
        store = PostgresSessionStore(pg.dsn, 60, 10, table_name=table(), timeout=1.0)
        try:
            await store.append("s", [Turn("user", "before")])
            pg.stop()
            with pytest.raises(SessionStoreError):
                await store.get("s")
            pg.start()
            # The pool drops its dead connections and opens new ones; at most a call or two fail.
            outcomes: list[list[str] | None] = []
            for _ in range(5):
                try:
                    outcomes.append([t.content for t in await store.get("s")])
                except SessionStoreError:
                    outcomes.append(None)
                    await asyncio.sleep(0.2)
            assert outcomes[-1] == ["before"]
            assert outcomes.count(None) <= 2
            await store.append("s", [Turn("user", "after")])
            assert [t.content for t in await store.get("s")] == ["before", "after"]
        finally:
            await store.aclose()


# ----------------------------------------------------------------------------- expiry sweep


async def test_the_sweeper_deletes_expired_rows_only(
    server: PostgresServer, conn: asyncpg.Connection
) -> None:
    name = table()
    store = PostgresSessionStore(server.dsn, 1, 5, table_name=name, sweep_interval=0.3)
    keeper = PostgresSessionStore(server.dsn, 60, 5, table_name=name)
    try:
        for i in range(3):
            await store.append(f"old{i}", [Turn("user", "x")])
        await keeper.append("fresh", [Turn("user", "y")])
        for _ in range(50):  # the sweeper runs every 0.3 s; 10 s at most
            if await conn.fetchval(f'SELECT count(*) FROM "{name}"') == 1:
                break
            await asyncio.sleep(0.2)
        assert await conn.fetchval(f'SELECT session_key FROM "{name}"') == "fresh"
    finally:
        await store.aclose()
        await keeper.aclose()


# ----------------------------------------------------------------------------- config


def test_build_reads_the_dsn_file_and_refuses_what_it_cannot_use(server: PostgresServer) -> None:
    config = SessionsRuntimeConfig.model_validate(
        {"store": "postgres", "postgres": {"dsnFile": "dsn", "poolSize": 3, "tableName": "chat"}}
    )
    files: dict[str, str] = {"dsn": server.dsn + "\n"}
    store = build_session_store(config, files.get, "bot")
    assert isinstance(store, PostgresSessionStore)
    assert (store.pool_size, store.table_name, store.prefix, store.dsn) == (3, "chat", "bot:", server.dsn)
    with pytest.raises(ValueError, match="DSN file dsn is missing"):
        build_session_store(config, dict[str, str]().get, "bot")
    secret = "host=db password=hunter2"
    with pytest.raises(ValueError, match="postgresql:// URL") as raised:
        build_session_store(config, {"dsn": secret}.get, "bot")
    assert "hunter2" not in str(raised.value)
    with pytest.raises(ValueError, match="postgres is required"):
        SessionsRuntimeConfig.model_validate({"store": "postgres"})
    with pytest.raises(ValueError, match="tableName"):
        SessionsRuntimeConfig.model_validate({"store": "postgres", "postgres": {"tableName": 'x"; drop'}})


# ----------------------------------------------------------------------------- two runtimes


def test_a_conversation_continues_across_two_runtimes(server: PostgresServer, tmp_path: Path) -> None:
    sessions = {"store": "postgres", "maxTurns": 10, "postgres": {"poolSize": 2, "tableName": table()}}
    credentials = default_credentials({"sessions-postgres-dsn": server.dsn})
    with (
        FakeUpstream("openai") as fake,
        runtime_fleet(
            tmp_path, 2, credentials, chain=[chain_entry(fake)], sessions=sessions, system_prompt="Be brief."
        ) as (first, second),
    ):
        ask_in_one_session([first.url, second.url], ["first question", "second question"], KEY)
        # The second runtime sent the first exchange upstream: it read it from the database.
        contents = [m["content"] for m in fake.state.bodies[-1]["messages"]]
        assert contents == ["Be brief.", "first question", "Echo: first question", "second question"]
        for runtime in (first, second):
            log = runtime.log_path.read_text()
            assert server.password not in log


def test_a_rotated_dsn_gets_a_new_pool_and_history_stays(server: PostgresServer, tmp_path: Path) -> None:
    sessions = {"store": "postgres", "postgres": {"tableName": table()}}
    credentials = default_credentials({"sessions-postgres-dsn": server.dsn})
    with FakeUpstream("openai") as fake:
        files = RuntimeFiles(tmp_path, make_config(chain=[chain_entry(fake)], sessions=sessions), credentials)
        with InProcessRuntime(files) as runtime:
            first = runtime.runtime.state.sessions
            assert isinstance(first, PostgresSessionStore) and first.schema_version == LATEST
            session = ask_in_one_session([runtime.url], ["before the rotation"], KEY)
            # Same database, another DSN (as after a password change): a new store, same rows.
            files.update_credentials({"sessions-postgres-dsn": server.dsn + "?application_name=rotated"})
            assert wait_until(lambda: runtime.runtime.state.sessions is not first, timeout=10)
            ask_in_one_session([runtime.url], ["after the rotation"], KEY, session)
            contents = [m["content"] for m in fake.state.bodies[-1]["messages"]]
            assert contents[-3:] == ["before the rotation", "Echo: before the rotation", "after the rotation"]
            exposed = httpx.get(f"{runtime.url}/metrics").text
            for operation in ("load", "save"):
                series = f'sentient_session_store_duration_seconds_count{{operation="{operation}",store="postgres"}}'
                assert series in exposed
