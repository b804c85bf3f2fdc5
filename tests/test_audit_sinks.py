"""The audit log's SIEM sinks against real receivers: rsyslogd (Debian; TCP and TLS) and an HTTP
server speaking Splunk HEC. Outage and restart: nothing is lost within the buffer, everything
arrives in order, and the receiver's copy of the chain verifies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_runtime import metrics
from agent_runtime.audit import AuditLog, verify
from agent_runtime.audit.chain import RecordHead, record_head
from agent_runtime.audit.sinks import SinkSet
from agent_runtime.audit.syslog_sink import SD_ID, SyslogFormatter
from agent_runtime.config import AuditRuntimeConfig, SyslogSinkConfig
from agent_runtime.testing.hec_receiver import HECReceiver
from tests.support.rsyslog import Rsyslog, gtls_available
from tests.support.tls import make_self_signed
from tests.support.waiting import wait_for

KEY = b"audit-sink-test-key"
TOKEN = "hec-token-0123"


def _sinks(audit: AuditLog, tmp_path: Path, sinks: list[dict[str, object]], files: dict[str, str]) -> SinkSet:
    config = AuditRuntimeConfig.model_validate(
        {"sinks": sinks, "spoolDir": str(tmp_path / "spool"), "fsyncInterval": "100ms"}
    )
    sink_set = SinkSet(audit, hostname="agent-pod-0")
    sink_set.apply(config, files.get)
    return sink_set


def _value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def hec() -> Iterator[HECReceiver]:
    receiver = HECReceiver(token=TOKEN).start()
    yield receiver
    receiver.stop()


def test_hec_sink_ships_in_order_through_an_outage_and_the_chain_verifies(
    hec: HECReceiver, tmp_path: Path
) -> None:
    audit = AuditLog(KEY, tmp_path / "audit.log")
    sinks = _sinks(
        audit,
        tmp_path,
        [
            {
                "name": "splunk",
                "http": {"url": hec.url, "tokenFile": "hec-token", "index": "sec"},
                "batchSize": 25,
            }
        ],
        {"hec-token": TOKEN + "\n"},
    )
    try:
        for i in range(10):
            audit.record("auth.refused", reason="bad_key", n=i)
        wait_for(lambda: len(hec.records) == 10, "the first records at the receiver", timeout=20)
        assert _value("sentient_audit_sink_up", sink="splunk") == 1

        hec.stop()
        for i in range(10, 200):
            audit.record("auth.refused", reason="bad_key", n=i)
        wait_for(
            lambda: _value("sentient_audit_sink_up", sink="splunk") == 0, "the sink marked down", timeout=20
        )
        assert _value("sentient_audit_sink_buffer_records", sink="splunk") > 0

        hec.start()
        wait_for(lambda: len(hec.records) == 200, "the backlog at the receiver", timeout=60)
    finally:
        sinks.close()
        audit.close()
    records = hec.records
    assert [r["n"] for r in records] == list(range(200))
    assert verify((json.dumps(r) for r in records), KEY).ok
    event = hec.events[0]
    assert (
        event["sourcetype"] == "sentient:audit" and event["index"] == "sec" and event["host"] == "agent-pod-0"
    )
    assert isinstance(event["time"], float)
    assert _value("sentient_audit_sink_buffer_records", sink="splunk") == 0


def test_a_malformed_batch_is_dropped_and_counted_a_wrong_token_is_retried(
    hec: HECReceiver, tmp_path: Path
) -> None:
    files = {"hec-token": "wrong"}
    audit = AuditLog(KEY, tmp_path / "audit.log")
    sinks = _sinks(
        audit, tmp_path, [{"name": "retry", "http": {"url": hec.url, "tokenFile": "hec-token"}}], files
    )
    try:
        audit.record("auth.refused", n=0)
        wait_for(lambda: hec.requests >= 1, "a refused attempt", timeout=20)
        assert hec.records == []
        files["hec-token"] = TOKEN  # rotated: read again for the next attempt
        wait_for(lambda: len(hec.records) == 1, "the record after the token was fixed", timeout=30)
    finally:
        sinks.close()
    before = _value("sentient_audit_sink_records_total", sink="rejected", outcome="dropped_rejected")
    hec.reject.set()  # HEC's 400 "Invalid data format": this batch will never be taken
    sinks = _sinks(
        audit, tmp_path, [{"name": "rejected", "http": {"url": hec.url, "tokenFile": "t"}}], {"t": TOKEN}
    )
    try:
        audit.record("auth.refused", n=1)
        wait_for(
            lambda: (
                _value("sentient_audit_sink_records_total", sink="rejected", outcome="dropped_rejected")
                > before
            ),
            "the rejected batch counted",
            timeout=20,
        )
        hec.reject.clear()
        audit.record("auth.refused", n=2)  # the sink goes on with the next batch
        wait_for(
            lambda: [r["n"] for r in hec.records] == [0, 2],
            "the next record after the dropped one",
            timeout=20,
        )
    finally:
        sinks.close()
        audit.close()


def test_a_full_buffer_drops_the_newest_counts_them_and_says_so_in_the_chain(
    hec: HECReceiver, tmp_path: Path
) -> None:
    hec.stop()
    audit = AuditLog(KEY, tmp_path / "audit.log")
    sink = {"name": "small", "http": {"url": hec.url, "tokenFile": "t"}, "maxBufferBytes": 1 << 20}
    sinks = _sinks(audit, tmp_path, [sink], {"t": TOKEN})
    padding = "p" * 2000
    try:
        for i in range(800):  # about 1.7 MB: past the 1 MiB cap
            audit.record("auth.refused", n=i, padding=padding)
        dropped = _value("sentient_audit_sink_records_total", sink="small", outcome="dropped_buffer_full")
        assert dropped > 0
        assert _value("sentient_audit_sink_buffer_bytes", sink="small") <= 1 << 20
        hec.start()
        wait_for(
            lambda: _value("sentient_audit_sink_buffer_records", sink="small") == 0, "the buffer shipped"
        )
        audit.record("auth.refused", n=800)  # room again: the overflow is recorded in the chain
        wait_for(lambda: any(r["event"] == "audit.sink_overflow" for r in hec.records), "the overflow record")
    finally:
        sinks.close()
        audit.close()
    overflow = next(r for r in hec.records if r["event"] == "audit.sink_overflow")
    assert overflow["sink"] == "small" and overflow["dropped"] == dropped
    kept = [r["n"] for r in hec.records if r["event"] == "auth.refused"]
    assert kept[: len(kept) - 1] == list(range(len(kept) - 1))  # an unbroken run up to the gap
    assert overflow["first_seq"] == len(kept) - 1 and overflow["last_seq"] == 799
    # The local file has everything, the overflow record included.
    assert verify((tmp_path / "audit.log").read_text().splitlines(), KEY).ok


def test_syslog_messages_are_rfc5424_with_octet_counting() -> None:
    formatter = SyslogFormatter(
        SyslogSinkConfig.model_validate({"address": "h:1", "structuredData": True, "facility": "audit"}),
        "pod-0",
        42,
    )
    line = b'{"stream":"audit","ts":"2026-11-29T13:00:00.000Z","seq":3,"event":"auth.refused","why":"a]\\"b"}'
    frame = formatter.frame(line)
    length, _, message = frame.partition(b" ")
    assert int(length) == len(message)
    assert message == (
        b'<108>1 2026-11-29T13:00:00.000Z pod-0 sentient 42 auth.refused [' + SD_ID.encode()
        + b' seq="3" event="auth.refused"] ' + line
    )  # fmt: skip


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_syslog_sink_to_rsyslog_through_an_outage(tmp_path: Path, tls: bool) -> None:
    if tls and not gtls_available():
        pytest.skip("rsyslog's gtls driver is missing: install the Debian package rsyslog-gnutls")
    cert, key = make_self_signed(tmp_path / "tls")
    rsyslog = Rsyslog(tls=(cert, key) if tls else None).start()
    audit = AuditLog(KEY, tmp_path / "audit.log")
    syslog: dict[str, object] = {
        "address": rsyslog.tls_address if tls else rsyslog.address,
        "structuredData": True,
    }
    if tls:
        syslog["tls"] = {"caFile": "syslog-ca.pem"}
    sinks = _sinks(
        audit, tmp_path, [{"name": "rsyslog", "syslog": syslog}], {"syslog-ca.pem": cert.read_text()}
    )
    try:
        for i in range(20):
            audit.record("auth.refused", n=i)
        wait_for(lambda: len(rsyslog.lines()) == 20, "the first records in rsyslog's file", timeout=30)

        rsyslog.stop()
        for i in range(20, 150):
            audit.record("auth.refused", n=i)
        wait_for(
            lambda: _value("sentient_audit_sink_up", sink="rsyslog") == 0, "the sink marked down", timeout=20
        )

        rsyslog.start()
        wait_for(lambda: len(rsyslog.lines()) >= 150, "the backlog in rsyslog's file", timeout=60)
        sinks.close()
        lines = rsyslog.lines()
        raw = rsyslog.raw.read_text().splitlines()
    finally:
        sinks.close()
        audit.close()
        rsyslog.cleanup()
    assert [json.loads(line)["n"] for line in lines] == list(range(150))
    assert verify(lines, KEY).ok
    assert raw[0].startswith("<84>1 ") and f'[{SD_ID} seq="0" event="auth.refused"]' in raw[0]


def test_record_head_reads_the_envelope_fields_without_a_full_parse() -> None:
    audit_lines: list[str] = []

    class Collect:
        def write(self, text: str) -> None:
            audit_lines.append(text.strip())

        def flush(self) -> None:
            return

    audit = AuditLog(KEY, stream=Collect(), worker=3)  # type: ignore[arg-type]
    audit.record('odd"event\\name', reason="x", worker_note="worker")
    head = record_head(audit_lines[0].encode())
    assert (head.seq, head.event, head.worker) == (0, 'odd"event\\name', 3)
    assert head.ts.endswith("Z")
    assert record_head(b'{"seq":4,"event":"e","ts":"t"}') == RecordHead("t", 4, "e", None)
    assert record_head(b"not json") == RecordHead("", None, "", None)


def test_a_spool_that_cannot_be_opened_disables_that_sink_only(
    hec: HECReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    audit = AuditLog(KEY, tmp_path / "audit.log")
    config = AuditRuntimeConfig.model_validate(
        {"sinks": [{"name": "splunk", "http": {"url": hec.url, "tokenFile": "t"}}], "spoolDir": str(blocker)}
    )
    sink_set = SinkSet(audit)
    sink_set.apply(config, {"t": TOKEN}.get)
    assert sink_set.forwarders == {}
    audit.record("auth.failure")  # the local output still works
    # SENTIENT_AUDIT_SPOOL_DIR (sentient dev, the e2e pods) wins over the config's directory.
    monkeypatch.setenv("SENTIENT_AUDIT_SPOOL_DIR", str(tmp_path / "elsewhere"))
    sink_set.apply(config, {"t": TOKEN}.get, force=True)
    try:
        audit.record("auth.failure")
        wait_for(lambda: len(hec.records) == 1, "the record through the spool in the overriding directory")
    finally:
        sink_set.close()
        audit.close()
    assert (tmp_path / "elsewhere" / "splunk").is_dir()
    assert verify((tmp_path / "audit.log").read_text().splitlines(), KEY).ok


def test_json_lines_sink_posts_the_records_as_they_are(hec: HECReceiver, tmp_path: Path) -> None:
    audit = AuditLog(KEY, tmp_path / "audit.log")
    sink: dict[str, object] = {"name": "vector", "http": {"url": hec.url + "/ingest", "format": "jsonLines"}}
    sinks = _sinks(audit, tmp_path, [sink], {})
    try:
        for i in range(3):
            audit.record("ratelimit.reject", n=i)
        wait_for(lambda: len(hec.lines) == 3, "the JSON lines at the receiver", timeout=20)
    finally:
        sinks.close()
        audit.close()
    assert hec.lines == [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]


def test_hec_over_https_checks_the_receiver_against_the_bound_ca(tmp_path: Path) -> None:
    cert, key = make_self_signed(tmp_path / "tls")
    hec = HECReceiver(token=TOKEN, tls=(str(cert), str(key))).start()
    audit = AuditLog(KEY, tmp_path / "audit.log")
    http = {"url": hec.url, "tokenFile": "t", "tls": {"caFile": "ca.pem", "serverName": "localhost"}}
    files = {"t": TOKEN}  # no CA yet: the sink waits for it rather than trusting the system CAs
    sinks = _sinks(audit, tmp_path, [{"name": "tls", "http": http}], files)
    try:
        audit.record("auth.failure", n=0)
        wait_for(
            lambda: _value("sentient_audit_sink_up", sink="tls") == 0,
            "the sink waiting for its CA",
            timeout=20,
        )
        files["ca.pem"] = cert.read_text()
        sinks.apply(sinks.config, files.get, force=True)  # what a credentials reload does
        wait_for(lambda: len(hec.records) == 1, "the record over HTTPS", timeout=30)
    finally:
        sinks.close()
        audit.close()
        hec.stop()
    assert hec.records[0]["n"] == 0
