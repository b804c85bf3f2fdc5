"""Sentient Agent Framework compatibility: its agents run on the runtime unchanged, and every
event the runtime emits parses with the framework's own event models.

The framework (``sentient-agent-framework`` 0.3.0) pins fastapi, uvicorn and python-ulid, so it
never enters the project's environment: these tests build a separate environment in the cache
(tests/support/venvs.py) with the framework and the runtime's requirements, and run the runtime
(``python -m agent_runtime``), the framework's own ``DefaultServer`` and the event parser from
it, over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_runtime.testing import Fault, run_fake
from tests.support.net import free_port, wait_for_port
from tests.support.runtime import RuntimeFiles, RuntimeProcess, chain_entry, default_credentials, make_config
from tests.support.venvs import REPO, extra_requirements, project_env, venv

pytestmark = pytest.mark.slow

FRAMEWORK = "sentient-agent-framework==0.3.0"
AGENTS = REPO / "tests" / "data" / "framework_agents"
PARSER = REPO / "tests" / "support" / "framework_events.py"
KEY = {"X-API-Key": "alice-secret-key"}
ULID_A, ULID_B, ULID_C = (
    "01JDQ3Z8V6Q4N7M2K5H9G3F1E0",
    "01JDQ3Z8V6Q4N7M2K5H9G3F1E1",
    "01JDQ3Z8V6Q4N7M2K5H9G3F1E2",
)


@pytest.fixture(scope="module")
def framework_python() -> Path:
    """The interpreter of an environment with the framework (its pins) and the runtime's requirements."""
    return venv("saf", [*extra_requirements("runtime"), FRAMEWORK])


def body(prompt: str, *, interactions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """An /assist body as the framework's clients send it (ULIDs, a whole session)."""
    return {
        "query": {"id": ULID_A, "prompt": prompt},
        "session": {
            "processor_id": "proc-1",
            "activity_id": ULID_B,
            "request_id": ULID_C,
            "interactions": interactions or [],
        },
    }


def sse_records(text: str) -> list[dict[str, str]]:
    """``event:``/``data:`` records of an SSE body (comments, i.e. heartbeats, skipped)."""
    records = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if fields:
            records.append({"event": fields["event"], "data": fields["data"]})
    return records


def framework_parse(python: Path, responses: list[list[dict[str, str]]]) -> list[list[dict[str, Any]]]:
    """Every event parsed by the framework's ``ResponseEventAdapter`` (in its own environment)."""
    done = subprocess.run(
        [str(python), str(PARSER)],
        input=json.dumps(responses),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=project_env(python),
    )
    assert done.returncode == 0, done.stderr
    parsed: list[list[dict[str, Any]]] = json.loads(done.stdout)
    return parsed


@pytest.fixture(scope="module")
def framework_runtime(framework_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The runtime serving ``saf_agents:EveryEvent``, run from the framework's environment."""
    root = tmp_path_factory.mktemp("saf-runtime")
    files = RuntimeFiles(
        root, make_config(agent_class="saf_agents:EveryEvent", port=free_port()), default_credentials()
    )
    with RuntimeProcess(
        files, root / "runtime.log", python=str(framework_python), extra_paths=[AGENTS]
    ) as rt:
        yield rt.url


def ask(url: str, payload: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    """One /assist request over real HTTP."""
    return httpx.post(f"{url}/assist", json=payload, headers=KEY if headers is None else headers, timeout=30)


def test_framework_agent_runs_on_the_runtime(framework_python: Path, framework_runtime: str) -> None:
    response = ask(framework_runtime, body("hello framework agent"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    records = sse_records(response.text)
    events = [json.loads(r["data"]) for r in records]
    assert [(e["content_type"], e["event_name"]) for e in events] == [
        ("atomic.textblock", "plan"),
        ("atomic.json", "session"),
        ("chunked.text", "response"),
        ("chunked.text", "response"),
        ("chunked.text", "response"),
        ("chunked.text", "response"),
        ("atomic.error", "error"),
        ("atomic.done", "done"),
    ]
    # Built with the agent's name, given the framework's types and the caller's session.
    assert events[0]["content"] == "test-agent got hello framework agent"
    assert events[1]["content"] == {
        "processor_id": "proc-1",
        "activity_id": ULID_B,
        "query_id": ULID_A,
        "interactions": 0,
    }
    assert "".join(e["content"] for e in events[2:6]) == "hello framework agent "
    assert events[5]["is_complete"] and len({e["stream_id"] for e in events[2:6]}) == 1
    assert events[6]["content"] == {
        "error_message": "a recoverable problem",
        "error_code": 409,
        "details": {"hint": "none"},
    }
    assert {e["source"] for e in events} == {"proc-1"}
    parsed = framework_parse(framework_python, [records])[0]
    assert [p["model"] for p in parsed] == [
        "TextBlockEvent",
        "DocumentEvent",
        *["TextChunkEvent"] * 4,
        "ErrorEvent",
        "DoneEvent",
    ]
    ids = [p["id"] for p in parsed]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_failures_of_a_framework_agent_end_in_error_then_done(
    framework_python: Path, framework_runtime: str
) -> None:
    crashed = ask(framework_runtime, body("boom"))
    refused = ask(framework_runtime, body("refuse"))
    anonymous = ask(framework_runtime, body("hello"), headers={})
    invalid = httpx.post(f"{framework_runtime}/assist", json={"query": {"id": 1}}, headers=KEY, timeout=30)
    crash_events = [json.loads(r["data"]) for r in sse_records(crashed.text)]
    # The framework's DefaultServer would hang here (the task's exception is lost); the runtime ends it.
    assert [e["content_type"] for e in crash_events] == ["atomic.error", "atomic.done"]
    assert crash_events[0]["content"]["error_message"] == "internal agent error"
    refusal = json.loads(sse_records(refused.text)[0]["data"])
    assert refusal["content"]["error_message"] == "this agent refuses"
    assert anonymous.status_code == 401 and invalid.status_code == 422
    responses = [sse_records(r.text) for r in (crashed, refused, anonymous, invalid)]
    parsed = framework_parse(framework_python, responses)
    assert [[p["model"] for p in events] for events in parsed] == [["ErrorEvent", "DoneEvent"]] * 4


def test_respond_and_interactions_as_the_framework_gives_them(framework_python: Path, tmp_path: Path) -> None:
    files = RuntimeFiles(
        tmp_path, make_config(agent_class="saf_agents:Responder", port=free_port()), default_credentials()
    )
    with RuntimeProcess(
        files, tmp_path / "runtime.log", python=str(framework_python), extra_paths=[AGENTS]
    ) as rt:
        response = ask(rt.url, body("once"))
    records = sse_records(response.text)
    assert [json.loads(r["data"])["content_type"] for r in records] == ["atomic.json", "atomic.done"]
    assert json.loads(records[0]["data"])["content"] == {"echo": "once"}
    assert [p["model"] for p in framework_parse(framework_python, [records])[0]] == [
        "DocumentEvent",
        "DoneEvent",
    ]


def test_the_runtime_emits_what_the_frameworks_default_server_emits(
    framework_python: Path, framework_runtime: str, tmp_path: Path
) -> None:
    """The same agent behind the framework's own server and behind the runtime: the same events."""
    port = free_port()
    script = (
        "import sys, saf_agents\n"
        "from sentient_agent_framework import DefaultServer\n"
        "DefaultServer(saf_agents.EveryEvent('test-agent')).run(host='127.0.0.1', port=int(sys.argv[1]))\n"
    )
    log = (tmp_path / "default-server.log").open("wb")
    server = subprocess.Popen(
        [str(framework_python), "-c", script, str(port)],
        env=project_env(framework_python, AGENTS),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout=30)
        theirs = sse_records(
            httpx.post(f"http://127.0.0.1:{port}/assist", json=body("same words"), timeout=30).text
        )
    finally:
        server.terminate()
        server.wait(10)
        log.close()
    ours = sse_records(ask(framework_runtime, body("same words")).text)

    def comparable(records: list[dict[str, str]]) -> list[tuple[Any, ...]]:
        out = []
        for record in records:
            event = json.loads(record["data"])
            content = event.get("content")
            if event["content_type"] == "chunked.text" and event["is_complete"]:
                content = None  # the closing chunk: the framework sends " ", the runtime ""
            out.append(
                (record["event"], event["content_type"], event["source"], content, event.get("is_complete"))
            )
        return out

    assert comparable(ours) == comparable(theirs)
    parsed = framework_parse(framework_python, [theirs, ours])
    assert [p["model"] for p in parsed[0]] == [p["model"] for p in parsed[1]]


def test_every_event_of_the_built_in_agent_parses(framework_python: Path, tmp_path: Path) -> None:
    """Streamed answers with a mid-stream failover (metadata on chunks) and upstream errors."""
    with run_fake("openai") as primary, run_fake("openai") as secondary:
        chain = [chain_entry(primary, "default/primary"), chain_entry(secondary, "default/secondary")]
        files = RuntimeFiles(tmp_path, make_config(chain=chain, port=free_port()), default_credentials())
        with RuntimeProcess(files, tmp_path / "runtime.log", python=str(framework_python)) as rt:
            plain = ask(rt.url, body("one two three"))
            primary.inject(Fault("reset", after_chunks=2))
            failover = ask(rt.url, body("four five six seven"))
            primary.inject(Fault("status", status=500, count=-1))
            secondary.inject(Fault("status", status=500, count=-1))
            failed = ask(rt.url, body("eight"))
    responses = [sse_records(r.text) for r in (plain, failover, failed)]
    metadata = [json.loads(r["data"]).get("metadata") for r in responses[1]]
    assert any(m and m.get("failover") for m in metadata), metadata
    parsed = framework_parse(framework_python, responses)
    assert {p["model"] for events in parsed for p in events} == {"TextChunkEvent", "ErrorEvent", "DoneEvent"}
    assert [p["model"] for p in parsed[2]] == ["TextChunkEvent", "ErrorEvent", "DoneEvent"] or [
        p["model"] for p in parsed[2]
    ] == ["ErrorEvent", "DoneEvent"]
