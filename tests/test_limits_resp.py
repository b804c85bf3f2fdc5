"""The limiter's lean pipelined Redis connection: replies in order, however they arrive, on a real server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agent_runtime.limits.resp import Address, LeanConnection, _Protocol, encode, lean_address
from tests.support.redis_server import RedisServer, redis_or_skip


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_or_skip() as srv:
        yield srv


def test_lean_address_takes_plain_urls_only() -> None:
    assert lean_address("redis://127.0.0.1:6390/0") == Address("127.0.0.1", 6390)
    assert lean_address("redis://u:pw@h:1/3") == Address("h", 1, 3, "u", "pw")
    assert lean_address("rediss://h") == Address("h", 6379, tls=True)
    # Options, sockets and other schemes keep redis-py's client, which honours them all.
    assert lean_address("redis://h:1/0?socket_timeout=5") is None
    assert lean_address("rediss://h:1?ssl_cert_reqs=none") is None
    assert lean_address("unix:///tmp/redis.sock") is None
    assert lean_address(None) is None
    assert "pw" not in repr(lean_address("redis://:pw@h:1"))


def test_encode_is_a_resp_array_of_bulk_strings() -> None:
    assert encode(("SET", "k", 12, b"\x00v")) == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n$2\r\n\x00v\r\n"
    assert encode(("SET", "clé", "é")) == "*3\r\n$3\r\nSET\r\n$4\r\nclé\r\n$2\r\né\r\n".encode()


async def test_replies_split_anywhere_reach_their_callers_in_order() -> None:
    protocol = _Protocol(asyncio.get_running_loop(), timeout=5.0)
    futures = [protocol.send(encode(("PING",))) for _ in range(6)]
    wire = b"$5\r\nhello\r\n:42\r\n+OK\r\n-NOSCRIPT No matching script\r\n*2\r\n$1\r\na\r\n:-1\r\n$-1\r\n"
    for i in range(len(wire)):  # one byte at a time: every reply is cut at every position
        protocol.data_received(wire[i : i + 1])
    assert [f.result() for f in futures[:3]] == [b"hello", 42, b"OK"]
    with pytest.raises(NoScriptError):
        futures[3].result()
    assert futures[4].result() == [b"a", -1]
    assert futures[5].result() is None
    protocol.close()


async def test_many_callers_share_one_connection(server: RedisServer) -> None:
    server.start()
    lean = LeanConnection(lean_address(server.url))  # type: ignore[arg-type]
    replies = await asyncio.gather(*(lean.execute("INCRBY", f"lean:{i % 7}", i) for i in range(300)))
    assert all(isinstance(r, int) for r in replies)
    client = Redis.from_url(server.url)
    totals = [int(await client.get(f"lean:{k}")) for k in range(7)]  # type: ignore[arg-type]
    assert totals == [sum(i for i in range(300) if i % 7 == k) for k in range(7)]
    with pytest.raises(ResponseError):
        await lean.execute("NOSUCHCOMMAND")
    assert await lean.execute("PING") == b"PONG"  # an error reply leaves the connection usable
    await client.aclose()  # type: ignore[attr-defined]
    await lean.aclose()


async def test_password_and_database_from_the_url(server: RedisServer) -> None:
    with RedisServer(extra_args=["--requirepass", "s3cret"]) as srv:
        lean = LeanConnection(lean_address(f"redis://:s3cret@127.0.0.1:{srv.port}/2"))  # type: ignore[arg-type]
        assert await lean.execute("SET", "where", "two") == b"OK"
        client = Redis(port=srv.port, password="s3cret", db=2)
        assert await client.get("where") == b"two"
        await client.aclose()  # type: ignore[attr-defined]
        await lean.aclose()
        wrong = LeanConnection(lean_address(f"redis://:nope@127.0.0.1:{srv.port}/0"))  # type: ignore[arg-type]
        with pytest.raises(RedisConnectionError):  # AuthenticationError: Redis counts as unavailable
            await wrong.execute("PING")
        await wrong.aclose()


async def test_a_restarted_server_is_dialled_again(server: RedisServer) -> None:
    server.start()
    lean = LeanConnection(lean_address(server.url), connect_timeout=1.0)  # type: ignore[arg-type]
    assert await lean.execute("PING") == b"PONG"
    server.stop()
    with pytest.raises(RedisConnectionError):
        await lean.execute("PING")
    server.start()
    assert await lean.execute("PING") == b"PONG"
    await lean.aclose()


async def test_a_cancelled_caller_leaves_the_connection_in_step(server: RedisServer) -> None:
    server.start()
    lean = LeanConnection(lean_address(server.url))  # type: ignore[arg-type]
    blocked = asyncio.ensure_future(lean.execute("BLPOP", "lean:never", "0.3"))
    await asyncio.sleep(0.05)
    blocked.cancel()
    # The next command is answered after BLPOP's own (nil) reply, which is read and dropped.
    assert await lean.execute("ECHO", "mine") == b"mine"
    await lean.aclose()


async def test_a_silent_server_times_out_and_the_next_command_redials(server: RedisServer) -> None:
    server.start()
    lean = LeanConnection(lean_address(server.url), socket_timeout=0.2)  # type: ignore[arg-type]
    with pytest.raises(RedisTimeoutError):
        await lean.execute("BLPOP", "lean:never", "1")  # tried twice, 0.2 s each
    assert await lean.execute("PING") == b"PONG"
    await lean.aclose()


async def test_closing_writes_the_commands_queued_in_this_step(server: RedisServer) -> None:
    server.start()
    client = Redis.from_url(server.url)
    await client.delete("lean:f")
    lean = LeanConnection(lean_address(server.url))  # type: ignore[arg-type]
    assert await lean.execute("PING") == b"PONG"
    # Closing writes what is queued: a settle sent in the same step is not lost at shutdown.
    protocol = lean._protocol
    assert protocol is not None
    echo = protocol.send(encode(("ECHO", "x")))
    last = protocol.send(encode(("INCR", "lean:f")))
    await lean.aclose()  # in the same step: nothing was written yet
    for future in (echo, last):
        with pytest.raises(RedisConnectionError):
            await future
    for _ in range(100):
        if await client.get("lean:f") == b"1":
            break
        await asyncio.sleep(0.01)
    assert await client.get("lean:f") == b"1"
    await client.aclose()  # type: ignore[attr-defined]
