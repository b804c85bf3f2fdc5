"""The fake upstreams speak their wire formats over real HTTP and obey their admin API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent_runtime.llm.types import CONTINUATION_PROMPT
from agent_runtime.testing import FakeUpstream, Fault, answer_for, run_fake, wait_until
from sentient_operator.credentials.validate import Validity, validate_key
from tests.support.net import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeUpstream]:
    with run_fake("openai", api_key="key-1") as fake:
        yield fake


@pytest.fixture(scope="module")
def anthropic_fake() -> Iterator[FakeUpstream]:
    with run_fake("anthropic", api_key="key-2") as fake:
        yield fake


@pytest.fixture(autouse=True)
def _reset(request: pytest.FixtureRequest) -> None:
    for name in ("openai_fake", "anthropic_fake"):
        if name in request.fixturenames:
            fake: FakeUpstream = request.getfixturevalue(name)
            fake.state.reset()
            fake.set_api_key("key-1" if name == "openai_fake" else "key-2")


def _sse_data(text: str) -> list[str]:
    return [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]


def test_answers_are_deterministic_and_continuations_finish_them() -> None:
    full = answer_for([{"role": "user", "content": "one two three"}], None)
    assert "".join(full) == "Echo: one two three"
    assert full == answer_for([{"role": "user", "content": "one two three"}], None)
    assert len(answer_for([{"role": "user", "content": "x"}], 7)) == 7
    rest = answer_for(
        [
            {"role": "user", "content": "one two three"},
            {"role": "assistant", "content": "Echo: one "},
            {"role": "user", "content": CONTINUATION_PROMPT},
        ],
        None,
    )
    assert "".join(rest) == "two three"


def test_openai_non_streaming(openai_fake: FakeUpstream) -> None:
    response = httpx.post(
        f"{openai_fake.endpoint}/chat/completions",
        headers={"authorization": "Bearer key-1"},
        json={"model": "gpt-x", "messages": [{"role": "user", "content": "hi you"}]},
    )
    assert response.status_code == 200
    data = response.json()
    assert data["object"] == "chat.completion"
    assert data["model"] == "gpt-x"
    assert data["choices"][0]["message"]["content"] == "Echo: hi you"
    assert data["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}


def test_openai_streaming_with_usage(openai_fake: FakeUpstream) -> None:
    response = httpx.post(
        f"{openai_fake.endpoint}/chat/completions",
        headers={"authorization": "Bearer key-1"},
        json={
            "model": "gpt-x",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "hi you"}],
        },
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    data = _sse_data(response.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Echo: hi you"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    assert wait_until(lambda: openai_fake.state.streams_completed == 1)


def test_anthropic_non_streaming_and_streaming(anthropic_fake: FakeUpstream) -> None:
    headers = {"x-api-key": "key-2", "anthropic-version": "2023-06-01"}
    body = {"model": "claude-x", "max_tokens": 50, "messages": [{"role": "user", "content": "hi you"}]}
    data = httpx.post(f"{anthropic_fake.base_url}/v1/messages", headers=headers, json=body).json()
    assert data["type"] == "message"
    assert data["content"] == [{"type": "text", "text": "Echo: hi you"}]
    assert data["stop_reason"] == "end_turn"
    assert data["usage"] == {"input_tokens": 2, "output_tokens": 3}

    response = httpx.post(
        f"{anthropic_fake.base_url}/v1/messages", headers=headers, json={**body, "stream": True}
    )
    events = [line[6:].strip() for line in response.text.splitlines() if line.startswith("event:")]
    assert events[:3] == ["message_start", "content_block_start", "ping"]
    assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    payloads = [json.loads(d) for d in _sse_data(response.text)]
    assert [p["type"] for p in payloads] == events
    text = "".join(p["delta"]["text"] for p in payloads if p["type"] == "content_block_delta")
    assert text == "Echo: hi you"


def test_key_is_required_and_can_change_through_the_admin_api(openai_fake: FakeUpstream) -> None:
    url = f"{openai_fake.endpoint}/chat/completions"
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    assert httpx.post(url, json=body).status_code == 401
    assert httpx.post(url, json=body, headers={"authorization": "Bearer key-1"}).status_code == 200
    httpx.post(f"{openai_fake.base_url}/_admin/config", json={"api_key": "key-9"}).raise_for_status()
    assert httpx.post(url, json=body, headers={"authorization": "Bearer key-1"}).status_code == 401
    assert httpx.post(url, json=body, headers={"authorization": "Bearer key-9"}).status_code == 200
    state = httpx.get(f"{openai_fake.base_url}/_admin/state").json()
    assert state["keys_seen"] == {"key-1": 2, "key-9": 1}
    assert state["requests"] == 4 and state["auth_failures"] == 2


def test_faults_through_the_admin_api(openai_fake: FakeUpstream) -> None:
    url = f"{openai_fake.endpoint}/chat/completions"
    headers = {"authorization": "Bearer key-1"}
    body = {"model": "m", "messages": [{"role": "user", "content": "a b c d"}]}
    httpx.post(
        f"{openai_fake.base_url}/_admin/faults",
        json={
            "faults": [{"kind": "status", "status": 429, "retry_after": 3}, {"kind": "status", "status": 500}]
        },
    ).raise_for_status()
    first = httpx.post(url, json=body, headers=headers)
    assert first.status_code == 429 and first.headers["retry-after"] == "3"
    assert first.json()["error"]["type"] == "rate_limit_error"
    assert httpx.post(url, json=body, headers=headers).status_code == 500
    assert httpx.post(url, json=body, headers=headers).status_code == 200

    openai_fake.inject(Fault("reset", after_chunks=2))
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(url, json={**body, "stream": True}, headers=headers)
    assert wait_until(lambda: openai_fake.state.streams_aborted == 1)


def test_fault_scoped_to_a_model(openai_fake: FakeUpstream) -> None:
    url = f"{openai_fake.endpoint}/chat/completions"
    headers = {"authorization": "Bearer key-1"}
    openai_fake.inject(Fault("status", status=503, model="bad", count=-1))
    ok = {"model": "good", "messages": [{"role": "user", "content": "x"}]}
    assert httpx.post(url, json=ok, headers=headers).status_code == 200
    for _ in range(3):
        assert httpx.post(url, json={**ok, "model": "bad"}, headers=headers).status_code == 503
    httpx.delete(f"{openai_fake.base_url}/_admin/faults").raise_for_status()
    assert httpx.post(url, json={**ok, "model": "bad"}, headers=headers).status_code == 200


def test_hang_is_released_when_the_client_gives_up(openai_fake: FakeUpstream) -> None:
    openai_fake.inject(Fault("hang"))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{openai_fake.endpoint}/chat/completions",
            headers={"authorization": "Bearer key-1"},
            json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
            timeout=httpx.Timeout(5, read=0.3),
        )


def test_runs_as_a_module() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent_runtime.testing",
            "--kind",
            "anthropic",
            "--port",
            str(port),
            "--api-key",
            "k",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'operator'}{os.pathsep}{ROOT}"},
    )
    try:
        wait_for_port(port)
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/messages",
            headers={"x-api-key": "k"},
            json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hey"}]},
        )
        assert response.json()["content"][0]["text"] == "Echo: hey"
        assert httpx.get(f"http://127.0.0.1:{port}/_admin/state").json()["keys_seen"] == {"k": 1}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_reset_before_any_chunk_truncates_the_response(openai_fake: FakeUpstream) -> None:
    url = f"{openai_fake.endpoint}/chat/completions"
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    for stream in (False, True):
        openai_fake.inject(Fault("reset"))
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.post(url, json={**body, "stream": stream}, headers={"authorization": "Bearer key-1"})


@pytest.mark.parametrize("name", ["openai_fake", "anthropic_fake"])
def test_models_route_checks_the_key(request: pytest.FixtureRequest, name: str) -> None:
    fake: FakeUpstream = request.getfixturevalue(name)
    right = "key-1" if name == "openai_fake" else "key-2"

    def headers(key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"} if name == "openai_fake" else {"x-api-key": key}

    for path in ("/v1/models", "/models"):
        assert httpx.get(f"{fake.base_url}{path}", headers=headers(right)).status_code == 200
        assert httpx.get(f"{fake.base_url}{path}", headers=headers("wrong")).status_code == 401
        assert httpx.get(f"{fake.base_url}{path}").status_code == 401
    fake.set_api_key(None)
    assert httpx.get(f"{fake.base_url}/v1/models", headers=headers("anything")).status_code == 200


async def test_key_validation_against_the_fakes(
    openai_fake: FakeUpstream, anthropic_fake: FakeUpstream
) -> None:
    # What `validateBeforeRollout` does in the demo: a wrong key must read as Unauthorized.
    for provider_type, endpoint, right in (
        ("openai", openai_fake.endpoint, "key-1"),
        ("anthropic", anthropic_fake.base_url, "key-2"),
    ):
        assert (await validate_key(provider_type, endpoint, right)).validity is Validity.VALID
        assert (await validate_key(provider_type, endpoint, "wrong")).validity is Validity.UNAUTHORIZED
