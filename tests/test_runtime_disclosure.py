"""What callers learn about the upstreams: by default nothing that names a provider, model or URL.

Every response of ``/assist`` and ``/v1/chat/completions`` (headers and body, streamed or not) is
read whole, on success, on a mid-stream failover, and on every kind of failure (before the first
token and after it), and searched for the chain's provider ids, upstream models, endpoint URLs and
wire-format words. With ``llm.revealProvider`` the /assist metadata names the provider and model,
never the URL. Issue 14 item 7.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from agent_runtime import protocol
from agent_runtime.testing import FakeUpstream, Fault
from tests.support.runtime import (
    InProcessRuntime,
    RuntimeFiles,
    chain_entry,
    default_credentials,
    make_config,
)

KEY = "alice-secret-key"
PRIMARY_ID = "llm-team/primary-gateway"
BACKUP_ID = "llm-team/backup-gateway"
PRIMARY_MODEL = "internal-model-alpha"
BACKUP_MODEL = "internal-model-beta"
ALIAS = "my-agent-alias"


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    with FakeUpstream("openai") as primary, FakeUpstream("anthropic") as backup:
        yield primary, backup


def _secrets(primary: FakeUpstream, backup: FakeUpstream) -> list[str]:
    """What no caller may see: ids (and their parts), models, URLs, hosts, wire-format words."""
    words = [PRIMARY_ID, BACKUP_ID, "primary-gateway", "backup-gateway", "llm-team"]
    words += [PRIMARY_MODEL, BACKUP_MODEL, "internal-model"]
    for fake in (primary, backup):
        host = httpx.URL(fake.endpoint)
        words += [fake.endpoint, f"{host.host}:{host.port}"]
    # Anthropic's stop reason and exception class names would tell what answered and how it failed.
    words += ["anthropic", "end_turn", "RemoteProtocolError", "ReadError", "ConnectError", "Traceback"]
    return words


def _runtime(tmp_path: Path, primary: FakeUpstream, backup: FakeUpstream, reveal: bool) -> InProcessRuntime:
    chain = [
        chain_entry(primary, PRIMARY_ID, model=PRIMARY_MODEL, retry={"maxAttempts": 1}),
        chain_entry(backup, BACKUP_ID, model=BACKUP_MODEL, retry={"maxAttempts": 1}),
    ]
    config = make_config(chain=chain, llm={"revealProvider": True} if reveal else None)
    return InProcessRuntime(RuntimeFiles(tmp_path, config, default_credentials()))


def _everything(response: httpx.Response) -> str:
    """Status line, headers and the whole body, as one text to search."""
    head = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    return f"{response.status_code}\n{head}\n\n{response.read().decode()}"


def _exchanges(url: str) -> dict[str, str]:
    """One request of each kind a caller can make about an answer, everything it got back."""
    auth = {"authorization": f"Bearer {KEY}"}
    chat = {"model": ALIAS, "messages": [{"role": "user", "content": "one two three four five six"}]}
    out: dict[str, str] = {}
    with httpx.Client(timeout=30) as http:
        body = {"query": {"id": protocol.new_ulid(), "prompt": "one two three four five six"}}
        out["/assist"] = _everything(http.post(f"{url}/assist", json=body, headers=auth))
        out["chat"] = _everything(http.post(f"{url}/v1/chat/completions", json=chat, headers=auth))
        with http.stream(
            "POST", f"{url}/v1/chat/completions", json={**chat, "stream": True}, headers=auth
        ) as response:
            out["chat stream"] = _everything(response)
        out["models"] = _everything(http.get(f"{url}/v1/models", headers=auth))
        # Unauthenticated, so anyone who reaches the port is a caller here.
        out["/health"] = _everything(http.get(f"{url}/health"))
    return out


def _healthy(primary: FakeUpstream, backup: FakeUpstream) -> None:
    pass


def _mid_stream_failover(primary: FakeUpstream, backup: FakeUpstream) -> None:
    primary.inject(Fault(kind="reset", after_chunks=2, count=-1))


def _all_fail_before_the_first_token(primary: FakeUpstream, backup: FakeUpstream) -> None:
    primary.inject(Fault(kind="status", status=500, count=-1))
    backup.inject(Fault(kind="status", status=503, count=-1))


def _all_fail_after_the_first_token(primary: FakeUpstream, backup: FakeUpstream) -> None:
    primary.inject(Fault(kind="reset", after_chunks=1, count=-1))
    backup.inject(Fault(kind="reset", after_chunks=1, count=-1))


def _rate_limited(primary: FakeUpstream, backup: FakeUpstream) -> None:
    primary.inject(Fault(kind="status", status=429, retry_after=3, count=-1))
    backup.inject(Fault(kind="status", status=429, retry_after=3, count=-1))


SCENARIOS: dict[str, Callable[[FakeUpstream, FakeUpstream], None]] = {
    "healthy": _healthy,
    "mid-stream failover": _mid_stream_failover,
    "all fail before the first token": _all_fail_before_the_first_token,
    "all fail after the first token": _all_fail_after_the_first_token,
    "rate-limited": _rate_limited,
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_no_provider_model_or_url_reaches_callers_by_default(
    scenario: str, upstreams: tuple[FakeUpstream, FakeUpstream], tmp_path: Path
) -> None:
    primary, backup = upstreams
    for fake in upstreams:
        fake.state.reset()
    SCENARIOS[scenario](primary, backup)
    with _runtime(tmp_path, primary, backup, reveal=False) as runtime:
        seen = _exchanges(runtime.url)
    for fake in upstreams:
        fake.state.reset()
    secrets = _secrets(primary, backup)
    for name, text in seen.items():
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"{scenario}, {name}: the caller saw {leaked}:\n{text[:3000]}"
    # The scenario did what it says (the checks above would pass on an empty answer too).
    compact = {name: text.replace(" ", "") for name, text in seen.items()}
    if scenario in ("healthy", "mid-stream failover"):
        assert "Echo: one two three four five six" in seen["chat"]
        assert ('"failover":true' in compact["/assist"]) == (scenario == "mid-stream failover")
        # The OpenAI route names the model the caller asked for, as OpenAI's API does.
        assert f'"model":"{ALIAS}"' in compact["chat"] and f'"model":"{ALIAS}"' in compact["chat stream"]
    else:
        assert '"error_code"' in compact["/assist"] and '"request_id"' in compact["/assist"]
        assert '"error":{' in compact["chat stream"]
        # A reset mid-stream is a streaming fault: the whole (non-streamed) answer may arrive.
        assert '"error":{' in compact["chat"] or scenario == "all fail after the first token"


def test_reveal_provider_names_provider_and_model_but_never_the_url(
    upstreams: tuple[FakeUpstream, FakeUpstream], tmp_path: Path
) -> None:
    primary, backup = upstreams
    for fake in upstreams:
        fake.state.reset()
    _mid_stream_failover(primary, backup)
    with _runtime(tmp_path, primary, backup, reveal=True) as runtime:
        seen = _exchanges(runtime.url)
    for fake in upstreams:
        fake.state.reset()
    assist, health = seen["/assist"], seen["/health"]
    assert PRIMARY_ID in assist and BACKUP_ID in assist and BACKUP_MODEL in assist
    assert PRIMARY_ID in health and PRIMARY_MODEL in health
    urls = [s for s in _secrets(primary, backup) if "127.0.0.1" in s or s.startswith("http")]
    assert urls and not [u for u in urls if u in assist or u in health]
    # The OpenAI route has no field for them: it stays as it is by default.
    for name in ("chat", "chat stream", "models"):
        assert not [s for s in (PRIMARY_ID, BACKUP_ID, PRIMARY_MODEL, BACKUP_MODEL) if s in seen[name]], name
