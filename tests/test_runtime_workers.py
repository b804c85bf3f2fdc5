"""``server.workers``: one supervisor, N worker processes on one port, summed metrics, drain, restart."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import pytest

from agent_runtime.audit import AuditLog, verify, verify_file
from agent_runtime.config import RuntimeConfig
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
from tests.test_runtime_shutdown import KEY, sigterm_mid_stream

pytestmark = pytest.mark.slow


def start(tmp_path: Path, fake: FakeUpstream, *, workers: int = 2, metrics: bool = True) -> RuntimeProcess:
    port, metrics_port = free_ports(2)
    config = make_config(
        chain=[chain_entry(fake, timeouts={"idle": "30s", "total": "60s"})],
        port=port,
        metrics_port=metrics_port if metrics else 0,
        server={"shutdownGrace": "30s", "workers": workers},
    )
    files = RuntimeFiles(tmp_path, config, default_credentials())
    return RuntimeProcess(
        files, tmp_path / "runtime.log", env={"SENTIENT_AUDIT_LOG": str(tmp_path / "audit.log")}
    )


def started_workers(runtime: RuntimeProcess) -> int:
    return runtime.log_path.read_text().count('"msg": "agent runtime started"')


def children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def sample(text: str, name: str) -> float:
    """The value of one exposition line that starts with ``name`` (labels included)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_workers_share_the_port_sum_their_metrics_and_drain(tmp_path: Path) -> None:
    with FakeUpstream("openai", latency=0.05, tokens=30) as fake, start(tmp_path, fake) as runtime:
        assert runtime.proc is not None
        assert wait_until(lambda: started_workers(runtime) == 2, timeout=30)
        assert len(children(runtime.proc.pid)) == 2
        # New connections each: the kernel spreads them over both workers' sockets.
        for _ in range(40):
            assert httpx.get(f"{runtime.url}/v1/models", headers={"x-api-key": "wrong"}).status_code == 401
        for _ in range(10):
            answer = httpx.post(
                f"{runtime.url}/v1/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                headers={"x-api-key": KEY},
                timeout=30,
            )
            assert answer.status_code == 200

        # One scrape target: the supervisor's metrics port sums every worker's series.
        metrics_url = f"http://127.0.0.1:{runtime.files.config.server.metrics_port}/metrics"
        text = httpx.get(metrics_url).text
        assert sample(text, 'sentient_requests_total{route="/v1/models",status="401"}') == 40
        assert sample(text, 'sentient_requests_total{route="/v1/chat/completions",status="200"}') == 10
        assert sample(text, "sentient_auth_failures_total") == 40

        reader = sigterm_mid_stream(runtime, "drain me")
        reader.join(60)
        assert reader.error is None
        assert runtime.proc.wait(30) == 0
    # The stream in flight at SIGTERM finished whole, as with one process.
    assert isinstance(reader.events[-1], DoneEvent)
    assert not any(isinstance(e, ErrorEvent) for e in reader.events)
    text = "".join(e.content for e in reader.events if isinstance(e, TextChunkEvent))
    assert len(text.split()) == 30
    log = (tmp_path / "runtime.log").read_text()
    assert log.count("received SIGTERM; draining") == 2
    # One chain per worker, both verified; each worker refused some of the 40 callers.
    for index in (0, 1):
        audit = tmp_path / f"audit.log.worker-{index}"
        assert verify_file(audit, AUDIT_KEY.encode()).ok
        records = [json.loads(line) for line in audit.read_text().splitlines()]
        assert {r["worker"] for r in records} == {index}
        assert any(r["event"] == "auth.failure" for r in records)
        assert records[-1]["event"] == "runtime.stop"


def test_a_dead_worker_is_started_again_and_metrics_on_the_api_port(tmp_path: Path) -> None:
    with FakeUpstream("openai") as fake, start(tmp_path, fake, metrics=False) as runtime:
        assert runtime.proc is not None
        assert wait_until(lambda: started_workers(runtime) == 2, timeout=30)
        victim = children(runtime.proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
        assert wait_until(lambda: started_workers(runtime) == 3, timeout=30)
        assert victim not in children(runtime.proc.pid)
        assert len(children(runtime.proc.pid)) == 2
        assert "worker exited; starting it again" in runtime.log_path.read_text()
        # Without a metrics port any worker serves the summed /metrics on the API port.
        for _ in range(6):
            httpx.get(f"{runtime.url}/live")
        assert sample(httpx.get(f"{runtime.url}/metrics").text, 'sentient_requests_total{route="/live"') >= 6
        runtime.proc.send_signal(signal.SIGTERM)
        assert runtime.proc.wait(30) == 0


def test_audit_chains_of_workers_interleave_and_verify(tmp_path: Path) -> None:
    key = b"k" * 32
    lines: list[str] = []

    class Lines:
        def write(self, text: str) -> None:
            lines.append(text)

        def flush(self) -> None:
            pass

    logs = [AuditLog(key, stream=Lines(), worker=index) for index in (0, 1)]  # type: ignore[arg-type]
    for n in range(6):
        logs[n % 2].record("auth.failure", n=n)
    assert verify(lines, key).ok
    assert verify(lines, key).records == 6
    # Dropping one worker's record still breaks its chain.
    assert not verify(lines[:2] + lines[4:], key).ok
    # A worker resumes its own chain in a shared file, not the other's.
    path = tmp_path / "audit.log"
    path.write_text("".join(lines))
    resumed = AuditLog(key, path, worker=1)
    resumed.record("runtime.start")
    resumed.close()
    assert verify_file(path, key).ok


def test_workers_are_bounded() -> None:
    config = make_config(server={"workers": 4})
    assert config.server.workers == 4
    with pytest.raises(ValueError, match="workers"):
        RuntimeConfig.model_validate({**config.to_wire(), "server": {"workers": 0}})
