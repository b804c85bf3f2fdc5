"""Both wire formats through the manager over real HTTP: streaming and not, usage collected."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from agent_runtime.llm import ChatMessage, ChatRequest, Completed, LLMManager, TextDelta, Usage
from agent_runtime.llm.errors import UpstreamError
from agent_runtime.llm.providers import AnthropicAdapter, OpenAIAdapter, anthropic
from agent_runtime.llm.providers.base import StreamState
from agent_runtime.metrics import REGISTRY
from agent_runtime.testing import FakeUpstream, run_fake
from agent_runtime.testing.chain import chain_config, fake_provider

KEYS = {"openai.key": "sk-openai-test", "anthropic.key": "sk-ant-test"}
INPUT_WORDS = {"openai": 5, "anthropic": 3}


@pytest.fixture(scope="module", params=["openai", "anthropic"])
def fake(request: pytest.FixtureRequest) -> Iterator[FakeUpstream]:
    with run_fake(request.param, api_key=KEYS[f"{request.param}.key"]) as fake:
        yield fake


@pytest.fixture
async def manager(fake: FakeUpstream) -> AsyncIterator[LLMManager]:
    fake.state.reset()
    provider = fake_provider(
        fake, f"ns/{fake.kind}", model=f"{fake.kind}-model", credential_file=f"{fake.kind}.key"
    )
    manager = LLMManager(chain_config(provider, maxTokens=64, temperature=0.5), KEYS.get)
    yield manager
    await manager.aclose()


def _request(text: str = "tell me something") -> ChatRequest:
    return ChatRequest([ChatMessage("system", "be brief"), ChatMessage("user", text)])


async def test_complete(manager: LLMManager, fake: FakeUpstream) -> None:
    completion = await manager.complete(_request())
    assert completion.text == "Echo: tell me something"
    assert completion.provider == f"ns/{fake.kind}"
    assert completion.model == f"{fake.kind}-model"
    # OpenAI's vocabulary whatever the upstream (Anthropic says end_turn).
    assert completion.finish_reason == "stop"
    # The fake counts words of `messages`; Anthropic carries the system prompt outside them.
    assert completion.input_tokens == INPUT_WORDS[fake.kind] and completion.output_tokens == 4
    body = fake.state.bodies[-1]
    assert body["model"] == f"{fake.kind}-model" and body["stream"] is False
    assert body["max_tokens"] == 64 and body["temperature"] == 0.5
    if fake.kind == "anthropic":
        assert body["system"] == "be brief"
        assert [m["role"] for m in body["messages"]] == ["user"]
    else:
        assert [m["role"] for m in body["messages"]] == ["system", "user"]


async def test_stream(manager: LLMManager, fake: FakeUpstream) -> None:
    before = REGISTRY.get_sample_value(
        "sentient_tokens_total",
        {"provider": f"ns/{fake.kind}", "model": f"{fake.kind}-model", "direction": "output"},
    )
    events = [event async for event in manager.stream(_request("a b c"))]
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    # Pieces that arrive in one read are joined; the text is the same.
    assert "".join(texts) == "Echo: a b c" and all(texts)
    assert events[-2] == Usage(input_tokens=INPUT_WORDS[fake.kind], output_tokens=4)
    assert isinstance(events[-1], Completed) and events[-1].provider == f"ns/{fake.kind}"
    assert fake.state.streams_completed == 1
    if fake.kind == "openai":
        assert fake.state.bodies[-1]["stream_options"] == {"include_usage": True}
    after = REGISTRY.get_sample_value(
        "sentient_tokens_total",
        {"provider": f"ns/{fake.kind}", "model": f"{fake.kind}-model", "direction": "output"},
    )
    assert (after or 0) - (before or 0) == 4


async def test_request_parameters_override_config(manager: LLMManager, fake: FakeUpstream) -> None:
    request = _request()
    request.max_tokens, request.temperature, request.stop = 7, 0.1, ["END"]
    await manager.complete(request)
    body = fake.state.bodies[-1]
    assert body["max_tokens"] == 7 and body["temperature"] == 0.1
    assert body["stop_sequences" if fake.kind == "anthropic" else "stop"] == ["END"]


def test_urls() -> None:
    assert OpenAIAdapter().url("http://h/v1/") == "http://h/v1/chat/completions"
    assert AnthropicAdapter().url("https://api.anthropic.com") == "https://api.anthropic.com/v1/messages"
    assert AnthropicAdapter().url("http://h:1/v1") == "http://h:1/v1/messages"


def test_in_stream_errors_are_classified() -> None:
    with pytest.raises(UpstreamError) as err:
        AnthropicAdapter().parse_data(
            b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}', StreamState()
        )
    assert err.value.error_class == "5xx" and "Overloaded" not in str(err.value)
    with pytest.raises(UpstreamError) as err:
        OpenAIAdapter().parse_data(
            b'{"error":{"message":"boom sk-secret","type":"server_error"}}', StreamState()
        )
    assert err.value.error_class == "5xx" and "sk-secret" not in str(err.value)


def test_error_bodies_keep_only_the_error_type() -> None:
    err = OpenAIAdapter().error_for_status(
        401,
        b'{"error":{"message":"Incorrect API key provided: sk-abc***xyz","code":"invalid_api_key"}}',
        None,
    )
    assert err.error_class == "4xx" and "invalid_api_key" in err.detail and "sk-abc" not in err.detail
    assert AnthropicAdapter().error_for_status(529, b"not json", 2.0).error_class == "5xx"


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("something_new", "stop"),
        (None, None),
    ],
)
def test_anthropic_stop_reasons_become_openai_finish_reasons(
    stop_reason: str | None, finish_reason: str | None
) -> None:
    assert anthropic.finish_reason(stop_reason) == finish_reason
