"""Hot reload of config and credentials (kubelet-style ``..data`` swaps), atomic and under load."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_runtime import protocol
from agent_runtime.audit import verify_file
from agent_runtime.client import parse_stream
from agent_runtime.protocol import TextChunkEvent
from agent_runtime.reload import CredentialFiles, FileWatcher
from agent_runtime.testing import FakeUpstream, wait_until
from tests.support.runtime import (
    AUDIT_KEY,
    InProcessRuntime,
    MountedDir,
    RuntimeFiles,
    api_keys_json,
    chain_entry,
    default_credentials,
    make_config,
)

KEY = "alice-secret-key"
CRED_FILE = "provider.default.fake.apiKey"


class Load:
    """Requests in a loop from a few threads until stopped; records every outcome."""

    def __init__(self, url: str, body: dict[str, Any] | None = None, threads: int = 3) -> None:
        self.url = url
        self.body = body
        self.results: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                body = self.body or {"query": {"id": protocol.new_ulid(), "prompt": "config"}}
                response = client.post(f"{self.url}/assist", json=body, headers={"x-api-key": KEY})
                self.results.append((response.status_code, response.text))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def config_pairs(results: list[tuple[int, str]]) -> list[tuple[str, str]]:
    from agent_runtime.client import parse_stream
    from agent_runtime.protocol import DocumentEvent

    pairs = []
    for status, text in results:
        assert status == 200, text
        events = list(parse_stream(text.split("\n")))
        doc = next(e for e in events if isinstance(e, DocumentEvent))
        pairs.append((doc.content["system_prompt"], doc.content["description"]))
    return pairs


def test_credential_files_cache_and_invalidate(tmp_path: Path) -> None:
    mounted = MountedDir(tmp_path / "creds")
    mounted.write({"a": "one\n"})
    creds = CredentialFiles(mounted.path)
    first = creds.read("a")
    assert first == "one"
    assert creds.read("a") is first  # cached, same object
    assert creds.read("missing") is None
    mounted.write({"a": "two"})
    assert creds.read("a") == "one"  # cached until invalidated
    creds.invalidate()
    assert creds.read("a") == "two"
    with pytest.raises(ValueError):
        creds.read("../etc/passwd")


async def test_watcher_sees_kubelet_swaps(tmp_path: Path) -> None:
    config_dir = MountedDir(tmp_path / "config")
    config_dir.write({"config.yaml": "a: 1"})
    creds_dir = MountedDir(tmp_path / "creds")
    creds_dir.write({"k": "v1"})
    creds = CredentialFiles(creds_dir.path)
    fired: list[str] = []

    async def on_config() -> None:
        fired.append("config")

    async def on_creds() -> None:
        fired.append("credentials")

    watcher = FileWatcher(config_dir.path / "config.yaml", creds, on_config, on_creds)
    assert creds.read("k") == "v1"
    await watcher.check()
    assert fired == []
    creds_dir.write({"k": "v2"})
    config_dir.write({"config.yaml": "a: 2"})
    await watcher.check()
    assert fired == ["credentials", "config"]
    assert creds.read("k") == "v2"


@pytest.fixture
def scripted(tmp_path: Path) -> Iterator[InProcessRuntime]:
    config = make_config(agent_class="tests.support.runtime_agents:ScriptedAgent", system_prompt="v0")
    config.agent.description = "v0"
    files = RuntimeFiles(tmp_path, config, default_credentials())
    with InProcessRuntime(files, audit_path=tmp_path / "audit.log") as runtime:
        yield runtime


def _prompt_is(runtime: InProcessRuntime, expected: str) -> bool:
    return runtime.runtime.config.agent.system_prompt == expected


def _more_results(load: Load, than: int) -> bool:
    return len(load.results) > than


def test_config_reload_is_atomic_under_load(scripted: InProcessRuntime) -> None:
    files = scripted.files
    with Load(scripted.url) as load:
        assert wait_until(lambda: len(load.results) > 3, timeout=10)
        for version in range(1, 6):
            config = files.config.model_copy(deep=True)
            config.agent.system_prompt = f"v{version}"
            config.agent.description = f"v{version}"
            files.update_config(config)
            assert wait_until(functools.partial(_prompt_is, scripted, f"v{version}"), timeout=10)
            assert wait_until(functools.partial(_more_results, load, len(load.results) + 3), timeout=10)
    pairs = config_pairs(load.results)
    assert len(pairs) > 10
    # Every request saw one version, never a mix of two.
    assert all(a == b for a, b in pairs), [p for p in pairs if p[0] != p[1]]
    assert {a for a, _ in pairs} >= {"v0", "v5"}


def test_invalid_config_keeps_the_previous_one(scripted: InProcessRuntime) -> None:
    files = scripted.files
    files.config_dir.write({"config.yaml": "agent: {name: 1}\nllm: {chain: []}\n"})
    metrics = 'sentient_config_reloads_total{kind="config",result="error"}'
    assert wait_until(lambda: metrics in httpx.get(f"{scripted.url}/metrics").text, timeout=10)
    body = {"query": {"id": protocol.new_ulid(), "prompt": "config"}}
    response = httpx.post(f"{scripted.url}/assist", json=body, headers={"x-api-key": KEY})
    assert response.status_code == 200
    assert '"system_prompt":"v0"' in response.text


def test_api_key_rotation_applies_without_restart(scripted: InProcessRuntime, tmp_path: Path) -> None:
    files = scripted.files
    body = {"query": {"id": protocol.new_ulid(), "prompt": "echo:x"}}
    assert httpx.post(f"{scripted.url}/assist", json=body, headers={"x-api-key": KEY}).status_code == 200
    files.update_credentials({"apikeys.json": api_keys_json({"alice": ("alice-rotated", "gold")})})

    def rotated() -> bool:
        old = httpx.post(f"{scripted.url}/assist", json=body, headers={"x-api-key": KEY}).status_code
        return old == 401

    assert wait_until(rotated, timeout=10)
    response = httpx.post(f"{scripted.url}/assist", json=body, headers={"x-api-key": "alice-rotated"})
    assert response.status_code == 200
    log = tmp_path / "audit.log"
    text = log.read_text()
    assert '"event":"credentials.reload"' in text
    assert "alice-rotated" not in text
    assert verify_file(log, AUDIT_KEY.encode()).ok


def test_provider_key_rotation_under_load_drops_nothing(tmp_path: Path) -> None:
    with FakeUpstream("openai", api_key="sk-old") as fake:
        chain = [chain_entry(fake, credentialFile=CRED_FILE, retry={"maxAttempts": 1})]
        files = RuntimeFiles(tmp_path, make_config(chain=chain), default_credentials({CRED_FILE: "sk-old"}))
        body = {"query": {"id": protocol.new_ulid(), "prompt": "rotate me"}}
        with InProcessRuntime(files) as runtime, Load(runtime.url, body) as load:
            assert wait_until(lambda: len(load.results) > 5, timeout=10)
            # The provider accepts the new key before the old one is revoked, as in a real rotation.
            fake.set_api_key(None)
            files.update_credentials({CRED_FILE: "sk-new"})
            assert wait_until(lambda: fake.state.keys_seen["sk-new"] > 3, timeout=10)
            fake.set_api_key("sk-new")
            count = len(load.results)
            assert wait_until(lambda: len(load.results) > count + 10, timeout=10)
    failed = [(status, text) for status, text in load.results if status != 200 or '"atomic.error"' in text]
    assert not failed, failed[:3]
    assert fake.state.auth_failures == 0


def test_readiness_follows_provider_credentials(tmp_path: Path) -> None:
    with FakeUpstream("openai", api_key="sk-late") as fake:
        chain = [chain_entry(fake, credentialFile=CRED_FILE)]
        files = RuntimeFiles(tmp_path, make_config(chain=chain), default_credentials())
        with InProcessRuntime(files) as runtime:
            not_ready = httpx.get(f"{runtime.url}/ready")
            assert not_ready.status_code == 503
            assert not_ready.json()["reason"] == "no usable provider"
            assert httpx.get(f"{runtime.url}/health").json()["providers"][0]["credentials"] == "missing"
            files.update_credentials({CRED_FILE: "sk-late"})
            assert wait_until(lambda: httpx.get(f"{runtime.url}/ready").status_code == 200, timeout=10)
            body = {"query": {"id": protocol.new_ulid(), "prompt": "now it works"}}
            response = httpx.post(f"{runtime.url}/assist", json=body, headers={"x-api-key": KEY})
            events = list(parse_stream(response.text.split("\n")))
            assert "".join(e.content for e in events if isinstance(e, TextChunkEvent)) == "Echo: now it works"
            assert '"atomic.error"' not in response.text
