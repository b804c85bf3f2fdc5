"""Run the agent runtime for tests: in-process on a real port, or as ``python -m agent_runtime``.

Files are laid out the way the kubelet mounts a ConfigMap and a Secret: a
timestamped directory per version and a ``..data`` symlink swapped atomically,
with each key a symlink through ``..data``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from agent_runtime.app import AgentRuntime
from agent_runtime.audit import AuditLog
from agent_runtime.auth import hash_api_key
from agent_runtime.config import RuntimeConfig, dump_config
from agent_runtime.reload import CredentialFiles
from tests.support.net import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
AUDIT_KEY = "test-audit-key-0123456789abcdef"


class MountedDir:
    """A directory updated like a kubelet volume (``..data`` symlink swap)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self._version = 0

    def write(self, files: Mapping[str, str]) -> None:
        """Publish a new version holding exactly ``files``."""
        self._version += 1
        version_dir = self.path / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{self._version}"
        version_dir.mkdir()
        for name, content in files.items():
            (version_dir / name).write_text(content)
        tmp_link = self.path / "..data_tmp"
        if tmp_link.is_symlink():
            tmp_link.unlink()
        tmp_link.symlink_to(version_dir.name)
        tmp_link.replace(self.path / "..data")
        for name in files:
            link = self.path / name
            if not link.is_symlink():
                link.symlink_to(f"..data/{name}")
        for entry in self.path.iterdir():
            if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in files:
                entry.unlink()


def api_keys_json(keys: Mapping[str, tuple[str, str | None]]) -> str:
    """``apikeys.json`` for ``{key_id: (key, tier)}``."""
    import json

    return json.dumps({kid: {"sha256": hash_api_key(key), "tier": tier} for kid, (key, tier) in keys.items()})


def make_config(
    *,
    endpoint: str = "http://127.0.0.1:9/v1",
    agent_class: str | None = None,
    port: int | None = None,
    metrics_port: int = 0,
    api_keys: bool = True,
    anonymous: bool = False,
    jwt: dict[str, Any] | None = None,
    rate_limit: dict[str, Any] | None = None,
    sessions: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
    chain: list[dict[str, Any]] | None = None,
    llm: dict[str, Any] | None = None,
    system_prompt: str = "You are a test agent.",
    credential_file: str | None = None,
) -> RuntimeConfig:
    """A runtime config in wire form, validated."""
    data: dict[str, Any] = {
        "agent": {
            "name": "test-agent",
            "namespace": "default",
            "description": "an agent for tests",
            "systemPrompt": system_prompt,
            "capabilities": ["chat"],
        },
        "llm": {
            "chain": chain
            or [
                {
                    "id": "default/fake",
                    "type": "openai",
                    "endpoint": endpoint,
                    "model": "fake-model",
                    **({"credentialFile": credential_file} if credential_file else {}),
                }
            ],
            **(llm or {}),
        },
        "auth": {"anonymous": anonymous},
        "server": {
            "port": port or 8080,
            "metricsPort": metrics_port,
            "heartbeatInterval": "15s",
            **(server or {}),
        },
        "auditKeyFile": "audit-key",
    }
    if agent_class:
        data["agent"]["agentClass"] = agent_class
    if api_keys:
        data["auth"]["apiKeysFile"] = "apikeys.json"
    if jwt:
        data["auth"]["jwt"] = jwt
    if rate_limit:
        data["rateLimit"] = rate_limit
    if sessions:
        data["sessions"] = sessions
    return RuntimeConfig.model_validate(data)


DEFAULT_KEYS = {"alice": ("alice-secret-key", "gold"), "bob": ("bob-secret-key", None)}


def default_credentials(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Bound-Secret files: two API keys, the audit key, plus ``extra``."""
    return {"apikeys.json": api_keys_json(DEFAULT_KEYS), "audit-key": AUDIT_KEY, **(extra or {})}


class RuntimeFiles:
    """A config directory and a credentials directory, both mounted kubelet-style."""

    def __init__(self, root: Path, config: RuntimeConfig, credentials: Mapping[str, str]) -> None:
        self.config_dir = MountedDir(root / "config")
        self.credentials_dir = MountedDir(root / "credentials")
        self.config = config
        self.credentials = dict(credentials)
        self.config_dir.write({"config.yaml": dump_config(config)})
        self.credentials_dir.write(self.credentials)

    @property
    def config_path(self) -> Path:
        """Path of ``config.yaml``."""
        return self.config_dir.path / "config.yaml"

    def update_config(self, config: RuntimeConfig) -> None:
        """Publish a new config version."""
        self.config = config
        self.config_dir.write({"config.yaml": dump_config(config)})

    def update_credentials(self, changes: Mapping[str, str]) -> None:
        """Publish a new credentials version."""
        self.credentials.update(changes)
        self.credentials_dir.write(self.credentials)


class InProcessRuntime:
    """The runtime app served by uvicorn on 127.0.0.1 in a background thread (real HTTP)."""

    def __init__(self, files: RuntimeFiles, *, watch_interval: float = 0.05, audit_path: Path | None = None):
        self.files = files
        self.port = free_port()
        credentials = CredentialFiles(files.credentials_dir.path)
        audit = AuditLog(AUDIT_KEY.encode(), audit_path) if audit_path else None
        self.runtime = AgentRuntime(
            files.config,
            credentials,
            config_path=files.config_path,
            audit=audit,
            watch_interval=watch_interval,
        )
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> InProcessRuntime:
        """Serve until :meth:`stop`."""
        config = uvicorn.Config(
            self.runtime,
            host="127.0.0.1",
            port=self.port,
            lifespan="on",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        self._server = server

        def run() -> None:
            loop = asyncio.new_event_loop()
            self.loop = loop
            loop.run_until_complete(server.serve())
            loop.close()

        self._thread = threading.Thread(target=run, name="runtime", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("runtime did not start")
            time.sleep(0.01)
        return self

    def call(self, coro: Any) -> Any:
        """Run a coroutine on the runtime's loop and wait for its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=20)

    def __enter__(self) -> InProcessRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RuntimeProcess:
    """``python -m agent_runtime`` as a child process, fed with mounted files."""

    def __init__(
        self,
        files: RuntimeFiles,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        *,
        python: str | None = None,
        extra_paths: Sequence[Path] = (),
    ) -> None:
        self.files = files
        # Another environment's interpreter (e.g. one with the Sentient Agent Framework's pins).
        self.python = python or sys.executable
        self.extra_paths = [str(p) for p in extra_paths]
        self.log_path = log_path
        self.port = files.config.server.port
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RuntimeProcess:
        """Start and wait for the port."""
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), str(REPO), *self.extra_paths]),
            "SENTIENT_CONFIG": str(self.files.config_path),
            "SENTIENT_CREDENTIALS_DIR": str(self.files.credentials_dir.path),
            "SENTIENT_HOST": "127.0.0.1",
            **self.env,
        }
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [self.python, "-m", "agent_runtime"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(REPO),
        )
        log.close()
        try:
            wait_for_port(self.port, timeout=30)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"runtime did not start:\n{self.log_path.read_text()}") from None
        return self

    def stop(self) -> None:
        """SIGTERM, then SIGKILL."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def __enter__(self) -> RuntimeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def chain_entry(fake: Any, provider_id: str = "default/fake", **fields: Any) -> dict[str, Any]:
    """One chain entry (wire form) pointing at a fake upstream."""
    return {"id": provider_id, "type": fake.kind, "endpoint": fake.endpoint, "model": "fake-model", **fields}


@contextlib.contextmanager
def single_provider_runtime(
    root: Path, fake: Any, upstream_key: str, **config: Any
) -> Iterator[InProcessRuntime]:
    """An in-process runtime whose chain is ``fake`` alone, tried once, with its key file."""
    key_file = "provider.default.fake.apiKey"
    chain = [chain_entry(fake, credentialFile=key_file, retry={"maxAttempts": 1})]
    files = RuntimeFiles(
        root, make_config(chain=chain, **config), default_credentials({key_file: upstream_key})
    )
    with InProcessRuntime(files) as runtime:
        yield runtime


def free_ports(count: int) -> list[int]:
    """Distinct free ports."""
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


@contextlib.contextmanager
def runtime_fleet(
    root: Path, count: int, credentials: Mapping[str, str], **config: Any
) -> Iterator[list[RuntimeProcess]]:
    """``count`` ``python -m agent_runtime`` processes on free ports with the same config, ready.

    ``config`` goes to :func:`make_config` (the ports are chosen here); stopped on exit.
    """
    from agent_runtime.testing import wait_until

    runtimes: list[RuntimeProcess] = []
    try:
        for i, (port, metrics_port) in enumerate(zip(free_ports(count), free_ports(count), strict=True)):
            files = RuntimeFiles(
                root / f"r{i}", make_config(port=port, metrics_port=metrics_port, **config), credentials
            )
            runtimes.append(RuntimeProcess(files, root / f"runtime-{i}.log").start())
        for runtime in runtimes:
            assert wait_until(functools.partial(_ready, runtime.url), timeout=30)
        yield runtimes
    finally:
        for runtime in runtimes:
            runtime.stop()


def _ready(url: str) -> bool:
    return httpx.get(f"{url}/ready").status_code == 200


async def fire_chats(urls: list[str], n: int, api_key: str) -> list[httpx.Response]:
    """``n`` concurrent chat completions, round-robin over ``urls``, each with its own content."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(i: int) -> httpx.Response:
            body = {"model": "fake-model", "messages": [{"role": "user", "content": f"request {i}"}]}
            return await client.post(
                f"{urls[i % len(urls)]}/v1/chat/completions", json=body, headers={"x-api-key": api_key}
            )

        return await asyncio.gather(*(one(i) for i in range(n)))


def ask_in_one_session(
    urls: Sequence[str], prompts: Sequence[str], api_key: str, session: dict[str, str] | None = None
) -> dict[str, str]:
    """Send ``prompts[i]`` to ``urls[i]`` on /assist, all in one session (one activity id).

    Every answer must succeed. Returns the session, to continue it later.
    """
    from agent_runtime import protocol
    from agent_runtime.client import SyncSentientClient

    if session is None:
        session = {"processor_id": "p", "activity_id": protocol.new_ulid(), "request_id": protocol.new_ulid()}
    for url, prompt in zip(urls, prompts, strict=True):
        with SyncSentientClient(url, api_key=api_key) as client:
            result = client.ask(prompt, session=session)
        assert result.error is None, result.error
    return session
