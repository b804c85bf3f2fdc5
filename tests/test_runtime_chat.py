"""The built-in chat agent and the OpenAI-compatible endpoint, against a fake upstream, over real HTTP.

The OpenAI side is checked with the official ``openai`` Python client.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from agent_runtime import protocol
from agent_runtime.client import SyncSentientClient
from agent_runtime.protocol import ErrorEvent, TextChunkEvent
from agent_runtime.testing import FakeUpstream, Fault, wait_until
from tests.support.runtime import (
    InProcessRuntime,
    RuntimeFiles,
    chain_entry,
    default_credentials,
    make_config,
    single_provider_runtime,
)

KEY = "alice-secret-key"
UPSTREAM_KEY = "sk-upstream-1"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream("openai", api_key=UPSTREAM_KEY) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def server(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessRuntime]:
    root = tmp_path_factory.mktemp("chat")
    with single_provider_runtime(
        root, fake, UPSTREAM_KEY, system_prompt="Be brief.", sessions={"store": "memory", "maxTurns": 4}
    ) as runtime:
        yield runtime


@pytest.fixture(autouse=True)
def _reset(fake: FakeUpstream) -> None:
    fake.state.reset()
    fake.state.configure({"latency": 0.0, "tokens": None})


def test_chat_agent_streams_the_answer(server: InProcessRuntime, fake: FakeUpstream) -> None:
    with SyncSentientClient(server.url, api_key=KEY) as client:
        result = client.ask("hello there")
    assert result.error is None and result.done
    assert result.text == "Echo: hello there"
    chunks = [e for e in result.events if isinstance(e, TextChunkEvent)]
    assert len({c.stream_id for c in chunks}) == 1
    assert chunks[-1].is_complete
    # Which provider and model answered stays internal unless the agent reveals it (test below).
    assert chunks[-1].metadata == {"finish_reason": "stop"}
    sent = fake.state.bodies[-1]["messages"]
    assert sent[0] == {"role": "system", "content": "Be brief."}
    assert sent[-1] == {"role": "user", "content": "hello there"}
    assert fake.state.keys_seen[UPSTREAM_KEY] == 1


def test_session_history_is_kept_and_bounded(server: InProcessRuntime, fake: FakeUpstream) -> None:
    session = {"processor_id": "p", "activity_id": protocol.new_ulid(), "request_id": protocol.new_ulid()}
    with SyncSentientClient(server.url, api_key=KEY) as client:
        for prompt in ("one", "two", "three"):
            assert client.ask(prompt, session=session).error is None
    messages = fake.state.bodies[-1]["messages"]
    # maxTurns 4: the last two exchanges, after the system prompt, then the new prompt.
    assert [m["content"] for m in messages] == ["Be brief.", "one", "Echo: one", "two", "Echo: two", "three"]


def test_upstream_failure_is_error_then_done(server: InProcessRuntime, fake: FakeUpstream) -> None:
    fake.inject(Fault(kind="status", status=500, count=1))
    with SyncSentientClient(server.url, api_key=KEY) as client:
        result = client.ask("boom")
    assert result.done
    assert isinstance(result.error, ErrorEvent)
    assert result.error.error_code >= 500
    assert result.status == result.error.error_code


def test_client_disconnect_cancels_upstream(server: InProcessRuntime, fake: FakeUpstream) -> None:
    fake.inject(Fault(kind="hang", after_chunks=1, count=1))
    body = {"query": {"id": protocol.new_ulid(), "prompt": "please hang"}}
    with (
        httpx.Client(timeout=10) as http,
        http.stream("POST", f"{server.url}/assist", json=body, headers={"x-api-key": KEY}) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("data:") and '"chunked.text"' in line:
                break
        assert wait_until(lambda: fake.state.streams_started == 1)
    # The client is gone: the runtime must drop its upstream stream, not wait on the hang.
    assert wait_until(lambda: fake.state.streams_aborted == 1, timeout=10)
    assert wait_until(lambda: server.runtime.in_flight == 0, timeout=10)
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'sentient_client_disconnects_total{route="/assist"}' in metrics
    assert 'sentient_requests_total{route="/assist",status="499"}' in metrics


def openai_client(server: InProcessRuntime, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=20)


def test_openai_client_non_streaming(server: InProcessRuntime) -> None:
    completion = openai_client(server).chat.completions.create(
        model="test-agent", messages=[{"role": "user", "content": "hi from openai"}]
    )
    assert completion.choices[0].message.content == "Echo: hi from openai"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert completion.model == "test-agent"


def test_openai_client_streaming(server: InProcessRuntime) -> None:
    stream = openai_client(server).chat.completions.create(
        model="test-agent",
        messages=[{"role": "user", "content": "stream me please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text = ""
    finish = None
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text == "Echo: stream me please"
    assert finish == "stop"
    assert usage is not None and usage.total_tokens > 0


def test_openai_models(server: InProcessRuntime) -> None:
    models = openai_client(server).models.list()
    assert [m.id for m in models.data] == ["test-agent"]


def test_openai_auth_errors(server: InProcessRuntime) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        openai_client(server, key="wrong").chat.completions.create(
            model="test-agent", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == 401
    assert "wrong" not in str(info.value.body)


def test_openai_invalid_body_422(server: InProcessRuntime) -> None:
    response = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "m", "messages": []},
        headers={"authorization": f"Bearer {KEY}"},
    )
    assert response.status_code == 422
    assert "messages" in response.json()["error"]["message"]


def test_openai_upstream_error_status(server: InProcessRuntime, fake: FakeUpstream) -> None:
    fake.inject(Fault(kind="status", status=500, count=1))
    with pytest.raises(openai.APIStatusError) as info:
        openai_client(server).chat.completions.create(
            model="test-agent", messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code >= 500


def test_openai_stream_failure_before_first_token_is_an_http_error(
    server: InProcessRuntime, fake: FakeUpstream
) -> None:
    fake.inject(Fault(kind="status", status=500, count=1))
    with pytest.raises(openai.APIStatusError) as info:
        for _ in openai_client(server).chat.completions.create(
            model="test-agent", messages=[{"role": "user", "content": "x"}], stream=True
        ):
            pass
    assert info.value.status_code >= 500
    assert info.value.body is not None


def test_openai_stream_upstream_error_mid_stream(server: InProcessRuntime, fake: FakeUpstream) -> None:
    fake.inject(Fault(kind="reset", after_chunks=1, count=5))
    with pytest.raises(openai.APIError):
        for _ in openai_client(server).chat.completions.create(
            model="test-agent", messages=[{"role": "user", "content": "a b c d"}], stream=True
        ):
            pass


def test_metrics_port_absent_means_main_port(server: InProcessRuntime, tmp_path: Path) -> None:
    text = httpx.get(f"{server.url}/metrics").text
    assert "sentient_requests_total" in text
    assert UPSTREAM_KEY not in text and KEY not in text


@pytest.mark.parametrize("reveal", [False, True], ids=["default", "revealProvider"])
def test_mid_stream_failover_keeps_the_stream_and_says_so(tmp_path: Path, reveal: bool) -> None:
    with FakeUpstream("openai") as primary, FakeUpstream("anthropic") as secondary:
        primary.inject(Fault(kind="reset", after_chunks=2, count=-1))
        chain = [
            chain_entry(primary, "default/primary", retry={"maxAttempts": 1}),
            chain_entry(secondary, "default/secondary", model="claude-fake"),
        ]
        config = make_config(chain=chain, llm={"revealProvider": True} if reveal else None)
        files = RuntimeFiles(tmp_path, config, default_credentials())
        with InProcessRuntime(files) as runtime, SyncSentientClient(runtime.url, api_key=KEY) as client:
            result = client.ask("one two three four five")
    assert result.error is None and result.done
    assert result.text == "Echo: one two three four five"
    chunks = [e for e in result.events if isinstance(e, TextChunkEvent)]
    assert len({c.stream_id for c in chunks}) == 1
    switched = [c for c in chunks if c.metadata and c.metadata.get("failover")]
    assert len(switched) == 1
    if not reveal:
        # The caller learns that a failover happened and why, not between which providers.
        assert switched[0].metadata == {"failover": True, "reason": "reset"}
        assert chunks[-1].metadata == {"finish_reason": "stop"}
        return
    assert switched[0].metadata == {
        "failover": True,
        "from_provider": "default/primary",
        "to_provider": "default/secondary",
        "reason": "reset",
    }
    assert chunks[-1].metadata is not None and chunks[-1].metadata["provider"] == "default/secondary"
    assert chunks[-1].metadata["model"] == "claude-fake"


def test_openai_stream_disconnect_cancels_upstream(server: InProcessRuntime, fake: FakeUpstream) -> None:
    fake.inject(Fault(kind="hang", after_chunks=1, count=1))
    body = {"model": "m", "messages": [{"role": "user", "content": "hang here"}], "stream": True}
    with (
        httpx.Client(timeout=10) as http,
        http.stream(
            "POST", f"{server.url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"}
        ) as response,
    ):
        for line in response.iter_lines():
            if '"content":"Echo:' in line:
                break
    assert wait_until(lambda: fake.state.streams_aborted == 1, timeout=10)
    assert wait_until(lambda: server.runtime.in_flight == 0, timeout=10)


def test_openai_complete_disconnect_cancels_upstream(server: InProcessRuntime, fake: FakeUpstream) -> None:
    # A non-streamed answer runs in the request's own task: a client gone while it waits still ends it.
    fake.inject(Fault(kind="hang", count=1))
    body = {"model": "m", "messages": [{"role": "user", "content": "hang whole"}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{server.url}/v1/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {KEY}"},
            timeout=httpx.Timeout(10, read=0.5),
        )
    assert wait_until(lambda: server.runtime.in_flight == 0, timeout=10)
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'sentient_client_disconnects_total{route="/v1/chat/completions"}' in metrics
    assert 'sentient_requests_total{route="/v1/chat/completions",status="499"}' in metrics
    # The runtime answers the next request at once: the hung upstream connection was dropped.
    fake.state.reset()
    completion = openai_client(server).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "after"}]
    )
    assert completion.choices[0].message.content == "Echo: after"


def test_logs_of_a_request_carry_its_request_id(server: InProcessRuntime, fake: FakeUpstream) -> None:
    import io
    import json
    import logging

    from agent_runtime.logging import JSONFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    logger = logging.getLogger("agent_runtime")
    logger.addHandler(handler)
    try:
        fake.inject(Fault(kind="status", status=500, count=1))
        body = {"query": {"id": protocol.new_ulid(), "prompt": "fail loudly"}}
        headers = {"x-api-key": KEY, "x-request-id": "trace-me-42"}
        response = httpx.post(f"{server.url}/assist", json=body, headers=headers, timeout=20)
        assert response.headers["x-request-id"] == "trace-me-42"
        assert '"atomic.error"' in response.text
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    mine = [line for line in lines if line.get("request_id") == "trace-me-42"]
    assert mine, lines
    assert any(line["logger"] == "agent_runtime.pipeline" for line in mine)
    assert KEY not in stream.getvalue()
