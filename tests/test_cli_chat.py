"""``sentient chat`` against a real ``python -m agent_runtime`` with the fake upstream; rendering units."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_runtime import protocol
from agent_runtime.protocol import AnyEvent, DocumentEvent, DoneEvent, ErrorEvent, TextChunkEvent
from agent_runtime.sdk import turns_from_interactions
from agent_runtime.testing import FakeUpstream
from sentient_operator.cli.chat import ChatSession, Renderer, parse_target
from sentient_operator.cli.errors import CliError
from sentient_operator.cli.portforward import parse_forwarding_line, service_port
from tests.support.net import free_port
from tests.support.runtime import RuntimeFiles, RuntimeProcess, chain_entry, default_credentials, make_config

REPO = Path(__file__).resolve().parents[1]
KEY = "alice-secret-key"  # one of tests.support.runtime.DEFAULT_KEYS


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream("openai") as upstream:
        yield upstream


@pytest.fixture(scope="module")
def runtime(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeProcess]:
    root = tmp_path_factory.mktemp("chat-runtime")
    config = make_config(
        chain=[chain_entry(fake)],
        port=free_port(),
        metrics_port=free_port(),
        sessions={"store": "memory", "maxTurns": 10},
        system_prompt="Be brief.",
    )
    with RuntimeProcess(RuntimeFiles(root, config, default_credentials()), root / "runtime.log") as proc:
        yield proc


def sentient(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real command line, as a user runs it."""
    full_env = {
        **{k: v for k, v in os.environ.items() if k != "SENTIENT_API_KEY"},
        "PYTHONPATH": f"{REPO / 'operator'}{os.pathsep}{REPO}",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "sentient_operator.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        check=False,
    )


def test_one_shot_prompt_streams_the_answer(runtime: RuntimeProcess) -> None:
    done = sentient("chat", runtime.url, "-p", "hello there", "--api-key", KEY)
    assert done.returncode == 0, done.stderr
    assert "Echo: hello there" in done.stdout
    assert KEY not in done.stdout + done.stderr  # the key is never echoed


def test_api_key_from_the_environment_and_json_lines(runtime: RuntimeProcess) -> None:
    done = sentient("chat", runtime.url, "-p", "json please", "--json", env={"SENTIENT_API_KEY": KEY})
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[-1]["content_type"] == protocol.DONE
    text = "".join(e["content"] for e in events if e["content_type"] == protocol.TEXT_STREAM)
    assert text == "Echo: json please"


def test_rejected_key_is_a_red_error_and_exit_1(runtime: RuntimeProcess) -> None:
    done = sentient("chat", runtime.url, "-p", "hi", "--api-key", "wrong-key")
    assert done.returncode == 1
    assert "error 401" in done.stdout
    assert "wrong-key" not in done.stdout + done.stderr


def test_repl_keeps_the_session_across_turns(runtime: RuntimeProcess, fake: FakeUpstream) -> None:
    fake.state.reset()
    done = sentient(
        "chat", runtime.url, "--api-key", KEY, stdin="first question\n/session\nsecond question\n/exit\n"
    )
    assert done.returncode == 0, done.stderr
    assert "Echo: first question" in done.stdout and "Echo: second question" in done.stdout
    assert "turns=1" in done.stderr
    # The second upstream call carries the first exchange: the session was kept.
    contents = [m["content"] for m in fake.state.bodies[-1]["messages"]]
    assert contents == ["Be brief.", "first question", "Echo: first question", "second question"]


def test_unreachable_agent_is_one_line(tmp_path: Path) -> None:
    done = sentient("chat", f"http://127.0.0.1:{free_port()}", "-p", "hi")
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error: cannot reach the agent")
    assert "Traceback" not in done.stderr


# ----------------------------------------------------------------------------- units


def test_parse_target() -> None:
    assert parse_target("http://127.0.0.1:8080/").url == "http://127.0.0.1:8080"
    assert parse_target("team-a/bot") == parse_target("bot", "team-a")
    assert parse_target("bot").namespace == "default"
    for bad in ("a/b/c", "/bot", "ftp://x"):
        with pytest.raises(CliError):
            parse_target(bad)
    with pytest.raises(CliError, match="namespace"):
        parse_target("a/bot", "b")


def _chunk(stream: str, name: str, text: str, done: bool = False) -> TextChunkEvent:
    return TextChunkEvent(
        content_type=protocol.TEXT_STREAM,
        event_name=name,
        id=protocol.new_ulid(),
        source="bot",
        stream_id=stream,
        is_complete=done,
        content=text,
    )


def test_session_record_is_history_the_runtime_understands() -> None:
    session = ChatSession()
    events: list[AnyEvent] = [
        DocumentEvent(
            content_type=protocol.JSON, event_name="sources", id="1", source="bot", content={"n": 1}
        ),
        _chunk("s1", "response", "Hel"),
        _chunk("s1", "response", "lo"),
        _chunk("s1", "response", "", done=True),
        DoneEvent(content_type=protocol.DONE, event_name="done", id="2", source="bot"),
    ]
    session.record("hi", events)
    assert session.processor_id == "bot"
    assert [(t.role, t.content) for t in turns_from_interactions(session.interactions)] == [
        ("user", "hi"),
        ("assistant", "Hello"),
    ]
    body = session.body()
    assert body["activity_id"] == session.activity_id and body["processor_id"] == "bot"
    old = session.activity_id
    session.reset()
    assert session.activity_id != old and session.interactions == []


def test_renderer_keeps_interleaved_streams_apart() -> None:
    out = io.StringIO()
    renderer = Renderer(out, color=False)
    for event in (
        _chunk("a", "thinking", "step 1"),
        _chunk("b", "response", "The "),
        _chunk("b", "response", "answer"),
        _chunk("a", "thinking", ", step 2", done=True),
        _chunk("b", "response", ".", done=True),
        DocumentEvent(
            content_type=protocol.JSON, event_name="sources", id="1", source="bot", content={"n": 1}
        ),
        ErrorEvent(
            content_type=protocol.ERROR,
            event_name="error",
            id="2",
            source="bot",
            error_message="boom",
            error_code=502,
        ),
    ):
        renderer.event(event)
    assert out.getvalue().splitlines() == [
        "thinking> step 1",
        "response> The answer",
        "thinking> , step 2",
        "response> .",
        "sources> {",
        '  "n": 1',
        "}",
        "error 502: boom",
    ]


def test_renderer_says_failover_with_or_without_provider_ids() -> None:
    out = io.StringIO()
    renderer = Renderer(out, color=False)
    hidden = dataclasses.replace(
        _chunk("s", "response", "two"), metadata={"failover": True, "reason": "reset"}
    )
    revealed = dataclasses.replace(
        _chunk("s", "response", "three", done=True),
        metadata={"failover": True, "reason": "5xx", "from_provider": "a/x", "to_provider": "a/y"},
    )
    for event in (_chunk("s", "response", "one "), hidden, revealed):
        renderer.event(event)
    assert out.getvalue() == "response> one [failover: reset] two[failover a/x → a/y: 5xx] three\n"


def test_port_forward_helpers() -> None:
    assert parse_forwarding_line("Forwarding from 127.0.0.1:43121 -> 8080\n") == 43121
    assert parse_forwarding_line("Forwarding from [::1]:43121 -> 8080") is None
    svc = {
        "metadata": {"name": "bot"},
        "spec": {"ports": [{"name": "metrics", "port": 9090}, {"name": "http", "port": 80}]},
    }
    assert service_port(svc) == 80
