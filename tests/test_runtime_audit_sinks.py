"""The runtime with SIEM sinks configured: refused requests are audited, shipped to a Splunk-HEC
receiver and a real rsyslogd, and the requests never wait for the sinks (receiver gone, or hung
and never answering). After the outage everything arrives in order and the chain verifies; a
reload adds a sink without losing the backlog of the others; stopping ships the tail."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_runtime import metrics
from agent_runtime.audit import verify, verify_file
from agent_runtime.config import AuditRuntimeConfig, RuntimeConfig
from agent_runtime.testing.hec_receiver import HECReceiver
from tests.support.rsyslog import Rsyslog
from tests.support.runtime import AUDIT_KEY, InProcessRuntime, RuntimeFiles, default_credentials, make_config
from tests.support.waiting import wait_for

TOKEN = "hec-runtime-token"


def _with_sinks(config: RuntimeConfig, spool: Path, sinks: list[dict[str, Any]]) -> RuntimeConfig:
    audit = AuditRuntimeConfig.model_validate({"sinks": sinks, "spoolDir": str(spool)})
    return config.model_copy(update={"audit": audit})


@pytest.fixture
def hec() -> Iterator[HECReceiver]:
    receiver = HECReceiver(token=TOKEN).start()
    yield receiver
    receiver.stop()


@pytest.fixture
def rsyslog() -> Iterator[Rsyslog]:
    collector = Rsyslog().start()
    yield collector
    collector.cleanup()


def _refused(client: httpx.Client, n: int) -> None:
    """``n`` requests with a wrong key: each is audited (auth.failure) and answered 401."""
    for _ in range(n):
        response = client.post("/assist", json={"query": "hi"}, headers={"x-api-key": "wrong-key"})
        assert response.status_code == 401


def _refusals(records: list[dict[str, Any]]) -> list[int]:
    return [r["seq"] for r in records if r.get("event") == "auth.failure"]


def test_requests_never_wait_for_the_sinks_and_every_record_arrives_in_order(
    tmp_path: Path, hec: HECReceiver, rsyslog: Rsyslog
) -> None:
    sinks = [
        {"name": "splunk", "http": {"url": hec.url, "tokenFile": "hec-token", "timeout": "30s"}},
        {"name": "rsyslog", "syslog": {"address": rsyslog.address}},
    ]
    config = _with_sinks(make_config(), tmp_path / "spool", sinks)
    files = RuntimeFiles(tmp_path, config, default_credentials({"hec-token": TOKEN}))
    audit_file = tmp_path / "audit.log"
    runtime = InProcessRuntime(files, audit_path=audit_file).start()
    # The client's timeout (5 s) is far below the sink's (30 s): a request that waited for the hung
    # receiver below would fail here instead of answering.
    client = httpx.Client(base_url=runtime.url, timeout=5.0)
    try:
        _refused(client, 10)
        wait_for(lambda: len(_refusals(hec.records)) == 10, "the first refusals at the HEC receiver")

        hec.hang.set()  # accepts and never answers
        rsyslog.stop()  # gone
        _refused(client, 40)
        hec.stop()
        hec.hang.clear()
        _refused(client, 40)

        hec.start()
        rsyslog.start()
        wait_for(lambda: len(_refusals(hec.records)) == 90, "every refusal at the HEC receiver", timeout=60)
        wait_for(
            lambda: len(_refusals([json.loads(line) for line in rsyslog.lines()])) == 90,
            "every refusal in rsyslog's file",
            timeout=60,
        )
    finally:
        client.close()
        runtime.stop()
    local = [json.loads(line) for line in audit_file.read_text().splitlines()]
    # runtime.stop was shipped before the runtime ended (the sinks get a moment at shutdown).
    for received in (hec.records, [json.loads(line) for line in rsyslog.lines()]):
        # A record sent into the hung receiver's connection may arrive twice (at least once);
        # apart from that the receiver holds the local chain, in order.
        unique = list({r["seq"]: r for r in received}.values())
        assert [r["seq"] for r in unique] == [r["seq"] for r in local]
        assert verify((json.dumps(r) for r in unique), AUDIT_KEY.encode()).ok
    assert verify_file(audit_file, AUDIT_KEY.encode()).ok
    assert 'sentient_audit_sink_up{sink="splunk"} 1.0' in metrics.exposition().decode()


def test_a_reload_adds_a_sink_and_keeps_the_others_backlog(tmp_path: Path, hec: HECReceiver) -> None:
    second = HECReceiver(token=TOKEN).start()
    spool = tmp_path / "spool"
    config = _with_sinks(
        make_config(), spool, [{"name": "first", "http": {"url": hec.url, "tokenFile": "t"}}]
    )
    files = RuntimeFiles(tmp_path, config, default_credentials({"t": TOKEN}))
    runtime = InProcessRuntime(files, audit_path=tmp_path / "audit.log").start()
    client = httpx.Client(base_url=runtime.url, timeout=5.0)
    try:
        hec.stop()
        _refused(client, 5)
        both = [
            {"name": "first", "http": {"url": hec.url, "tokenFile": "t", "source": "agent"}},
            {"name": "second", "http": {"url": second.url, "tokenFile": "t"}},
        ]
        files.update_config(_with_sinks(make_config(), spool, both))
        sink_set = runtime.runtime.audit_sinks
        assert sink_set is not None
        wait_for(lambda: "second" in sink_set.forwarders, "the new sink attached by the reload")
        _refused(client, 5)
        wait_for(lambda: len(_refusals(second.records)) == 5, "the new sink's records")
        hec.start()
        wait_for(lambda: len(_refusals(hec.records)) == 10, "the first sink's backlog and new records")
    finally:
        client.close()
        runtime.stop()
        second.stop()
    assert hec.events[-1]["source"] == "agent"  # the changed settings apply to the backlog too
    assert verify((json.dumps(r) for r in hec.records), AUDIT_KEY.encode()).ok
