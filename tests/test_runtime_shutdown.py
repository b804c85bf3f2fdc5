"""``python -m agent_runtime`` as a process: metrics port, SIGTERM drain of a live stream, grace deadline."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import httpx
import pytest

from agent_runtime import protocol
from agent_runtime.audit import verify_file
from agent_runtime.client import SyncSentientClient
from agent_runtime.protocol import DoneEvent, ErrorEvent, TextChunkEvent
from agent_runtime.testing import FakeUpstream, wait_until
from tests.support.runtime import (
    AUDIT_KEY,
    RuntimeFiles,
    RuntimeProcess,
    chain_entry,
    default_credentials,
    free_ports,
    make_config,
)

KEY = "alice-secret-key"
pytestmark = pytest.mark.slow


def start(tmp_path: Path, fake: FakeUpstream, grace: str) -> RuntimeProcess:
    port, metrics_port = free_ports(2)
    config = make_config(
        chain=[chain_entry(fake, timeouts={"idle": "30s", "total": "60s"})],
        port=port,
        metrics_port=metrics_port,
        server={"shutdownGrace": grace},
    )
    files = RuntimeFiles(tmp_path, config, default_credentials())
    return RuntimeProcess(
        files, tmp_path / "runtime.log", env={"SENTIENT_AUDIT_LOG": str(tmp_path / "audit.log")}
    )


class StreamReader(threading.Thread):
    """Reads one /assist stream in the background."""

    def __init__(self, url: str, prompt: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.prompt = prompt
        self.events: list[protocol.AnyEvent] = []
        self.first_chunk = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with SyncSentientClient(self.url, api_key=KEY, timeout=60) as client:
                for event in client.assist(self.prompt):
                    self.events.append(event)
                    if isinstance(event, TextChunkEvent):
                        self.first_chunk.set()
        except BaseException as exc:
            self.error = exc


def sigterm_mid_stream(runtime: RuntimeProcess, prompt: str) -> StreamReader:
    """Start an /assist stream, wait for its first chunk, then send SIGTERM to the runtime."""
    reader = StreamReader(runtime.url, prompt)
    reader.start()
    assert reader.first_chunk.wait(30)
    assert runtime.proc is not None
    runtime.proc.send_signal(signal.SIGTERM)
    return reader


def test_sigterm_drains_a_live_stream(tmp_path: Path) -> None:
    # 30 tokens at 50 ms each: the stream is still running when SIGTERM arrives.
    with FakeUpstream("openai", latency=0.05, tokens=30) as fake, start(tmp_path, fake, "30s") as runtime:
        assert httpx.get(f"{runtime.url}/ready").status_code == 200
        metrics_url = f"http://127.0.0.1:{runtime.files.config.server.metrics_port}/metrics"
        assert "sentient_requests_total" in httpx.get(metrics_url).text
        assert httpx.get(f"{runtime.url}/metrics").status_code == 404

        reader = sigterm_mid_stream(runtime, "drain me")
        assert runtime.proc is not None

        # Draining: not ready, new requests refused with 503 (as error + done on /assist).
        assert wait_until(lambda: httpx.get(f"{runtime.url}/ready").status_code == 503, timeout=10)
        body = {"query": {"id": protocol.new_ulid(), "prompt": "too late"}}
        refused = httpx.post(f"{runtime.url}/assist", json=body, headers={"x-api-key": KEY})
        assert refused.status_code == 503
        assert '"atomic.error"' in refused.text and '"atomic.done"' in refused.text

        reader.join(60)
        assert reader.error is None
        # The in-flight stream finished normally: the whole answer, no error, done last.
        assert isinstance(reader.events[-1], DoneEvent)
        assert not any(isinstance(e, ErrorEvent) for e in reader.events)
        text = "".join(e.content for e in reader.events if isinstance(e, TextChunkEvent))
        assert len(text.split()) == 30
        assert runtime.proc.wait(30) == 0
    log = (tmp_path / "runtime.log").read_text()
    assert "draining" in log
    audit = tmp_path / "audit.log"
    assert '"event":"runtime.drain"' in audit.read_text()
    assert verify_file(audit, AUDIT_KEY.encode()).ok


def test_grace_deadline_ends_streams_with_error_and_done(tmp_path: Path) -> None:
    # 400 tokens at 50 ms: far longer than the 1 s grace.
    with FakeUpstream("openai", latency=0.05, tokens=400) as fake, start(tmp_path, fake, "1s") as runtime:
        reader = sigterm_mid_stream(runtime, "too long")
        assert runtime.proc is not None
        reader.join(60)
        assert runtime.proc.wait(30) == 0
    assert reader.error is None
    assert isinstance(reader.events[-1], DoneEvent)
    error = reader.events[-2]
    assert isinstance(error, ErrorEvent) and error.error_code == 503
    # Upstream stream was cancelled, not left hanging.
    assert fake.state.streams_aborted == 1


def test_invalid_config_exits_2(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.support.runtime import REPO

    (tmp_path / "config.yaml").write_text("agent: {}\n")
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'operator'}{os.pathsep}{REPO}",
        "SENTIENT_CONFIG": str(tmp_path / "config.yaml"),
        "SENTIENT_CREDENTIALS_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "agent_runtime"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert line["level"] == "error" and "config" in line["msg"]


def test_slow_uploads_do_not_stretch_the_shutdown_past_its_grace(tmp_path: Path) -> None:
    import socket
    import time

    grace = 2.0
    with FakeUpstream("openai") as fake, start(tmp_path, fake, f"{grace:g}s") as runtime:
        assert runtime.proc is not None
        uploads = []
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", runtime.port), timeout=30)
            # Headers and a tenth of the announced body, then nothing: a client uploading slowly.
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + f"X-API-Key: {KEY}\r\n".encode()
                + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                + b'{"model": "x", '
            )
            uploads.append(sock)
        time.sleep(0.3)
        started = time.monotonic()
        runtime.proc.send_signal(signal.SIGTERM)
        assert runtime.proc.wait(30) == 0
        elapsed = time.monotonic() - started
        answers = []
        for sock in uploads:
            with sock:
                answers.append(sock.recv(65536).split(b"\r\n", 1)[0])
    # The drain ends inside the grace; the margin is for the interpreter's own exit on a busy
    # machine. (Before: grace + 2 s of forced wait + uvicorn's 5 s, about 9.7 s here.)
    assert elapsed < grace + 2.0, elapsed
    # Each slow upload was answered, not dropped: 503, the agent is shutting down.
    assert answers == [b"HTTP/1.1 503 Service Unavailable"] * 3


def test_non_streamed_answers_end_on_disconnect_and_on_drain(tmp_path: Path) -> None:
    # A whole answer runs in the request's own task; the runtime's protocol tells it of a
    # disconnect, the drain ends it as tracked work: both still end it, as for a stream.
    from agent_runtime.testing import Fault

    body = {"model": "m", "messages": [{"role": "user", "content": "hang whole"}]}
    headers = {"authorization": f"Bearer {KEY}"}
    with FakeUpstream("openai") as fake, start(tmp_path, fake, "1s") as runtime:
        url = f"{runtime.url}/v1/chat/completions"
        metrics_url = f"http://127.0.0.1:{runtime.files.config.server.metrics_port}/metrics"
        fake.inject(Fault(kind="hang", count=1))
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url, json=body, headers=headers, timeout=httpx.Timeout(10, read=0.5))
        assert wait_until(
            lambda: (
                'sentient_requests_total{route="/v1/chat/completions",status="499"}'
                in httpx.get(metrics_url).text
            ),
            timeout=10,
        )
        assert (
            'sentient_client_disconnects_total{route="/v1/chat/completions"}' in httpx.get(metrics_url).text
        )
        fake.state.reset()
        answer = httpx.post(url, json=body, headers=headers, timeout=10)
        assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"]

        fake.inject(Fault(kind="hang", count=1))
        result: list[httpx.Response] = []
        client = threading.Thread(
            target=lambda: result.append(httpx.post(url, json=body, headers=headers, timeout=30))
        )
        client.start()
        assert wait_until(lambda: fake.state.requests >= 2)
        assert runtime.proc is not None
        runtime.proc.send_signal(signal.SIGTERM)
        client.join(30)
        assert runtime.proc.wait(30) == 0
    assert result and result[0].status_code == 503
    assert result[0].json()["error"]["message"] == "the agent is shutting down"
