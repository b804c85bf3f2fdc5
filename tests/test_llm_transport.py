"""The lean HTTP/1.1 transport under both event loops the runtime may use (uvloop, asyncio):
keep-alive reuse, early close, stale keep-alive connections, TLS with a private CA."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import uvloop

from agent_runtime.llm import ChatMessage, ChatRequest, Completed, LLMManager, ProviderSwitch, TextDelta
from agent_runtime.llm.transport import KEEPALIVE_EXPIRY, LeanTransport
from agent_runtime.testing import FakeUpstream, Fault, run_fake, wait_until
from agent_runtime.testing.chain import chain_config, fake_provider
from tests.support.tls import make_self_signed

Runner = Callable[[Coroutine[Any, Any, Any]], Any]
RUNNERS: dict[str, Runner] = {"uvloop": uvloop.run, "asyncio": asyncio.run}


@pytest.fixture(params=sorted(RUNNERS))
def run(request: pytest.FixtureRequest) -> Runner:
    return RUNNERS[request.param]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with run_fake("openai") as fake:
        yield fake


@pytest.fixture(scope="module")
def backup() -> Iterator[FakeUpstream]:
    with run_fake("anthropic") as fake:
        yield fake


def _request() -> ChatRequest:
    return ChatRequest([ChatMessage("user", "one two three four")])


def _transport(manager: LLMManager, index: int = 0) -> LeanTransport:
    transport = manager._pools.get(manager._snapshot.entries[index].pool_key, retire_after=1).transport
    assert isinstance(transport, LeanTransport)
    return transport


def test_connections_are_reused(run: Runner, fake: FakeUpstream) -> None:
    fake.state.reset()

    async def scenario() -> None:
        manager = LLMManager(chain_config(fake_provider(fake, "ns/a")), lambda _: None)
        try:
            for _ in range(5):
                events = [e async for e in manager.stream(_request())]
                assert isinstance(events[-1], Completed)
                assert (await manager.complete(_request())).text == "Echo: one two three four"
            assert len(_transport(manager)._open) == 1
        finally:
            await manager.aclose()

    run(scenario())
    assert fake.state.requests == 10 and fake.state.streams_completed == 5


def test_early_close_aborts_the_upstream_stream(run: Runner, fake: FakeUpstream) -> None:
    fake.state.reset()
    fake.state.configure({"latency": 0.02, "tokens": 300})

    async def scenario() -> None:
        manager = LLMManager(chain_config(fake_provider(fake, "ns/a")), lambda _: None)
        try:
            async with aclosing(manager.stream(_request())) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        break
            # The half-read connection is closed, never reused.
            assert _transport(manager)._open == set()
        finally:
            await manager.aclose()

    try:
        run(scenario())
        assert wait_until(lambda: fake.state.streams_aborted == 1)
    finally:
        fake.state.configure({"latency": 0, "tokens": None})


def test_mid_stream_reset_continues_under_both_loops(
    run: Runner, fake: FakeUpstream, backup: FakeUpstream
) -> None:
    fake.state.reset()
    backup.state.reset()
    fake.inject(Fault("reset", after_chunks=2))

    async def scenario() -> list[Any]:
        manager = LLMManager(
            chain_config(fake_provider(fake, "ns/a"), fake_provider(backup, "ns/b")), lambda _: None
        )
        try:
            return [e async for e in manager.stream(_request())]
        finally:
            await manager.aclose()

    events = run(scenario())
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Echo: one two three four"
    assert ProviderSwitch("ns/a", "ns/b", "mid_stream", "reset") in events


async def _closing_server(answered: list[int], refused: list[int]) -> asyncio.Server:
    """Answers the first request of each connection, then drops the connection on the next one,
    like a server whose keep-alive timeout fired just as the client reused the connection."""
    body = json.dumps(
        {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}], "usage": {}}
    ).encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                if served:
                    refused.append(1)
                    break
                served += 1
                answered.append(1)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_stale_keepalive_connection_is_retried_once_on_a_fresh_one(run: Runner) -> None:
    answered: list[int] = []
    refused: list[int] = []

    async def scenario() -> None:
        server = await _closing_server(answered, refused)
        port = server.sockets[0].getsockname()[1]
        config = chain_config(
            fake_provider_at(f"http://127.0.0.1:{port}/v1", retry={"maxAttempts": 1}),
        )
        manager = LLMManager(config, lambda _: None)
        try:
            for _ in range(3):
                assert (await manager.complete(_request())).text == "ok"
        finally:
            await manager.aclose()
            server.close()

    run(scenario())
    assert len(answered) == 3 and len(refused) == 2


def fake_provider_at(endpoint: str, **overrides: Any) -> Any:
    from agent_runtime.config import ProviderConfig

    return ProviderConfig.model_validate(
        {"id": "ns/raw", "type": "openai", "endpoint": endpoint, "model": "m", **overrides}
    )


def test_tls_with_a_private_ca(run: Runner, tmp_path: Path) -> None:
    cert_file, key_file = make_self_signed(tmp_path)
    files = {"ca.pem": cert_file.read_text(), "key": "sk-tls"}
    with run_fake(
        "anthropic", api_key="sk-tls", ssl_certfile=str(cert_file), ssl_keyfile=str(key_file)
    ) as tls:
        assert tls.endpoint.startswith("https://")

        async def scenario() -> None:
            trusted = fake_provider(tls, "ns/tls", credential_file="key", tls={"caFile": "ca.pem"})
            manager = LLMManager(chain_config(trusted), files.get)
            try:
                events = [e async for e in manager.stream(_request())]
                assert isinstance(events[-1], Completed)
            finally:
                await manager.aclose()
            # Without the CA the certificate is refused: a connect error, not a silent success.
            untrusted = fake_provider(tls, "ns/tls", credential_file="key", retry={"maxAttempts": 1})
            manager = LLMManager(chain_config(untrusted), files.get)
            try:
                with pytest.raises(Exception) as err:
                    await manager.complete(_request())
                assert "connect-error" in str(err.value)
            finally:
                await manager.aclose()

        run(scenario())


def test_rotated_ca_bundle_applies_to_the_next_request(run: Runner, tmp_path: Path) -> None:
    cert_file, key_file = make_self_signed(tmp_path)
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other_cert, _ = make_self_signed(other_dir)
    files = {"ca.pem": other_cert.read_text()}
    with run_fake("openai", ssl_certfile=str(cert_file), ssl_keyfile=str(key_file)) as tls:

        async def scenario() -> None:
            provider = fake_provider(tls, "ns/tls", tls={"caFile": "ca.pem"}, retry={"maxAttempts": 1})
            manager = LLMManager(chain_config(provider), files.get)
            try:
                with pytest.raises(Exception) as err:
                    await manager.complete(_request())
                assert "connect-error" in str(err.value)
                # The mounted CA bundle is rotated to the right one: no reload, no restart.
                files["ca.pem"] = cert_file.read_text()
                assert (await manager.complete(_request())).provider == "ns/tls"
                # An invalid bundle fails closed (no fallback to the public CAs).
                files["ca.pem"] = "not a certificate"
                with pytest.raises(Exception) as err:
                    await manager.complete(_request())
                assert "connect-error" in str(err.value)
            finally:
                await manager.aclose()

        run(scenario())


def test_plain_httpx_usage(run: Runner, fake: FakeUpstream) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient(transport=LeanTransport()) as client:
            response = await client.post(
                f"{fake.endpoint}/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
            )
            assert response.status_code == 200
            assert response.json()["choices"][0]["message"]["content"] == "Echo: x"
            missing = await client.get(f"{fake.base_url}/nothing-here")
            assert missing.status_code == 404

    run(scenario())


def test_httpx_own_transport_path_when_proxied(
    run: Runner, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a proxy in the environment the manager uses httpx's transport: same behaviour."""
    from agent_runtime.llm import pool

    monkeypatch.setattr(pool, "proxied", lambda origin: True)
    fake.state.reset()

    async def scenario() -> None:
        provider = fake_provider(fake, "ns/a", retry={"maxAttempts": 1}, timeouts={"idle": "200ms"})
        manager = LLMManager(chain_config(provider), lambda _: None)
        try:
            upstream = manager._pools.get(manager._snapshot.entries[0].pool_key, retire_after=1)
            assert upstream.transport is None and upstream.client is not None
            assert (await manager.complete(_request())).text == "Echo: one two three four"
            fake.inject(Fault("hang", after_chunks=2))
            with pytest.raises(Exception) as err:
                async for _ in manager.stream(_request()):
                    pass
            assert "idle timeout" in str(err.value)
            events = [e async for e in manager.stream(_request())]
            assert isinstance(events[-1], Completed)
        finally:
            await manager.aclose()

    run(scenario())


def _body() -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "x"}]}


def test_every_idle_connection_stale_falls_back_to_a_new_one(run: Runner, fake: FakeUpstream) -> None:
    """Two idle connections that the server drops as they are reused, one after the other: the
    request goes out on a new connection (it used to end the retry loop with no connection: an
    AssertionError, a lost pool slot and a 500 instead of an answer or a failover)."""
    fake.state.reset()

    async def scenario() -> None:
        provider = fake_provider(fake, "ns/a", retry={"maxAttempts": 1})
        manager = LLMManager(chain_config(provider), lambda _: None)
        try:
            await asyncio.gather(manager.complete(_request()), manager.complete(_request()))
            transport = _transport(manager)
            assert len(transport._open) == 2
            fake.state.configure({"drop_reused": 2})
            assert (await manager.complete(_request())).provider == "ns/a"
            assert transport.stale_reuses == 2 and fake.state.drop_reused == 0
            assert transport.in_use == 0 and len(transport._open) == 1
            # Streamed the same way.
            await asyncio.gather(manager.complete(_request()), manager.complete(_request()))
            fake.state.configure({"drop_reused": 2})
            events = [e async for e in manager.stream(_request())]
            assert isinstance(events[-1], Completed) and events[-1].provider == "ns/a"
            assert transport.stale_reuses == 4 and transport.in_use == 0
            # Many idle connections, all dropped: after a few, a new connection is opened at once.
            await asyncio.gather(*(manager.complete(_request()) for _ in range(8)))
            assert len(transport._open) == 8
            fake.state.configure({"drop_reused": 100})
            assert (await manager.complete(_request())).provider == "ns/a"
            assert transport.stale_reuses == 4 + 4
        finally:
            fake.state.configure({"drop_reused": 0})
            await manager.aclose()

    run(scenario())


def test_a_full_pool_waits_at_most_the_pool_timeout(run: Runner, fake: FakeUpstream) -> None:
    fake.state.reset()
    url = f"{fake.endpoint}/chat/completions"
    timeouts = {"connect": 2.0, "read": None, "write": 2.0, "pool": 0.2}

    async def scenario() -> None:
        transport = LeanTransport(max_connections=1)
        fake.inject(Fault("hang"))  # holds the only connection, answering nothing
        holder = asyncio.create_task(
            transport.handle_async_request(
                httpx.Request("POST", url, json=_body(), extensions={"timeout": timeouts})
            )
        )
        try:
            assert await asyncio.to_thread(wait_until, lambda: fake.state.requests == 1)
            waiting = transport.handle_async_request(
                httpx.Request("POST", url, json=_body(), extensions={"timeout": timeouts})
            )
            with pytest.raises(httpx.PoolTimeout):
                await asyncio.wait_for(waiting, 5)
        finally:
            holder.cancel()
            await asyncio.gather(holder, return_exceptions=True)
        # Both slots came back: the next request is served.
        assert transport.in_use == 0
        response = await transport.handle_async_request(
            httpx.Request("POST", url, json=_body(), extensions={"timeout": timeouts})
        )
        await response.aread()
        assert response.status_code == 200
        await response.aclose()
        await transport.aclose()

    run(scenario())


def _raw_request(url: str) -> tuple[tuple[str, str, int], bytes]:
    """The (scheme, host, port) of ``url`` and the bytes of a chat completion POST to it."""
    parsed = httpx.URL(url)
    body = json.dumps(_body()).encode()
    head = (
        f"POST {parsed.raw_path.decode()} HTTP/1.1\r\nhost: {parsed.netloc.decode()}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return (parsed.scheme, parsed.host, parsed.port or 80), head.encode() + body


def test_a_whole_answer_is_read_at_once_and_an_error_keeps_its_response(
    run: Runner, fake: FakeUpstream
) -> None:
    """send_whole: a 2xx answer comes back as its body with the connection released for reuse;
    an error status as the streaming response send_bytes gives (its head and body intact)."""
    fake.state.reset()
    key, data = _raw_request(f"{fake.endpoint}/chat/completions")
    timeouts = {"connect": 2.0, "read": 5.0, "write": 2.0, "pool": 1.0}

    async def scenario() -> None:
        transport = LeanTransport()
        try:
            for _ in range(3):
                answer = await transport.send_whole(key, data, timeouts)
                assert isinstance(answer, bytes)
                assert json.loads(answer)["choices"][0]["message"]["content"] == "Echo: x"
                assert transport.in_use == 0
            assert len(transport._open) == 1
            fake.inject(Fault("status", status=429, retry_after=3))
            error = await transport.send_whole(key, data, timeouts)
            assert isinstance(error, httpx.Response) and error.status_code == 429
            assert error.headers["retry-after"] == "3" and transport.in_use == 1
            assert b"rate" in (await error.aread()).lower()
            await error.aclose()
            assert transport.in_use == 0
        finally:
            await transport.aclose()

    run(scenario())
    assert fake.state.requests == 4


def test_pool_slots_go_to_waiters_in_order_and_a_waiter_that_left_takes_none(
    run: Runner, fake: FakeUpstream
) -> None:
    fake.state.reset()
    key, data = _raw_request(f"{fake.endpoint}/chat/completions")
    timeouts = {"connect": 2.0, "read": 5.0, "write": 2.0, "pool": 5.0}

    async def scenario() -> None:
        transport = LeanTransport(max_connections=1)
        try:
            held = await transport.send_bytes(key, data, timeouts)
            order: list[str] = []

            async def ask(name: str) -> None:
                answer = await transport.send_whole(key, data, timeouts)
                assert isinstance(answer, bytes)
                order.append(name)

            first = asyncio.create_task(ask("first"))
            leaving = asyncio.create_task(ask("leaving"))
            second = asyncio.create_task(ask("second"))
            await asyncio.sleep(0.05)
            leaving.cancel()
            await asyncio.sleep(0)
            assert len(transport._slots._waiters or ()) == 2
            await held.aread()
            await held.aclose()
            await asyncio.wait_for(asyncio.gather(first, second), 5)
            assert order == ["first", "second"] and leaving.cancelled()
            assert transport.in_use == 0 and not transport._slots._waiters
            # The slot is free again: taken at once, without waiting in line.
            assert isinstance(await transport.send_whole(key, data, timeouts), bytes)
        finally:
            await transport.aclose()

    run(scenario())


def test_a_header_with_a_line_break_is_never_sent(run: Runner, fake: FakeUpstream) -> None:
    fake.state.reset()

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=LeanTransport()) as client:
            for name, value in (("x-team", "a\r\nx-injected: 1"), ("x-team", "a\nb"), ("x-team", "a\0")):
                with pytest.raises(httpx.LocalProtocolError):
                    await client.post(
                        f"{fake.endpoint}/chat/completions", json=_body(), headers={name: value}
                    )

    run(scenario())
    assert fake.state.requests == 0


def test_a_provider_whose_headers_cannot_be_sent_is_skipped(
    run: Runner, fake: FakeUpstream, backup: FakeUpstream
) -> None:
    """A line break in an LLMProvider's defaultHeaders or inside its API key: the provider is
    not called (nothing reaches the wire) and the chain fails over to the next one."""
    fake.state.reset()
    backup.state.reset()
    files = {"bad-key": "sk-a\r\nx-injected: 1\n", "good-key": "sk-b\n"}

    async def scenario() -> list[Any]:
        events: list[Any] = []
        for bad in (
            fake_provider(fake, "ns/a", default_headers={"x-team": "a\r\nx-injected: 1"}),
            fake_provider(fake, "ns/a", default_headers={"x-team\r\nx-injected": "1"}),
            fake_provider(fake, "ns/a", credential_file="bad-key"),
        ):
            manager = LLMManager(
                chain_config(bad, fake_provider(backup, "ns/b", credential_file="good-key")), files.get
            )
            try:
                events += [e async for e in manager.stream(_request())]
                completion = await manager.complete(_request())
                assert completion.provider == "ns/b"
                events += completion.switches
            finally:
                await manager.aclose()
        return events

    events = run(scenario())
    assert fake.state.requests == 0 and backup.state.requests == 6
    switches = [e for e in events if isinstance(e, ProviderSwitch)]
    assert [s.reason for s in switches] == ["config"] * 4 + ["credentials"] * 2


def test_idle_connections_expire_before_common_upstreams_close_them(run: Runner) -> None:
    """Idle connections are dropped before uvicorn's default keep-alive (5 s) closes them
    (they used to be kept 30 s), so a reused connection is rarely one being closed."""
    assert uvicorn.Config(app="any:app").timeout_keep_alive > KEEPALIVE_EXPIRY
    # The same at a smaller scale: the server keeps idle connections 0.6 s, the pool 0.3 s.
    with run_fake("openai", keep_alive=0.6) as fake:

        async def scenario() -> None:
            transport = LeanTransport(keepalive_expiry=0.3)
            async with httpx.AsyncClient(transport=transport) as client:
                url = f"{fake.endpoint}/chat/completions"
                assert (await client.post(url, json=_body())).status_code == 200
                time.sleep(0.8)  # noqa: ASYNC251 - the server has closed; the loop has not seen it
                assert (await client.post(url, json=_body())).status_code == 200
                assert transport.stale_reuses == 0

        run(scenario())
