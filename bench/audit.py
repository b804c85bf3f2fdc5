"""The audit sinks' costs: the request path (one record) and the shipping (records per second).

In one process, with a real HEC receiver (agent_runtime.testing.hec_receiver) and, when
installed, a real rsyslogd (tests/support/rsyslog.py) on 127.0.0.1:

- ``record``: the time of ``AuditLog.record`` (what a request pays) with no sink, with the HEC
  sink, with HEC and syslog, and with both receivers down (the spool grows; nothing waits);
- ``drain``: after an outage of N records, the time from the receiver's return until the last
  record is acknowledged, and the process CPU per shipped record.

    PYTHONPATH=operator:. python bench/audit.py [--records 20000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "operator"), str(ROOT)]

from agent_runtime.audit import AuditLog  # noqa: E402
from agent_runtime.audit.sinks import SinkSet  # noqa: E402
from agent_runtime.config import AuditRuntimeConfig  # noqa: E402
from agent_runtime.testing.hec_receiver import HECReceiver  # noqa: E402


def _no_file(name: str) -> str | None:
    """The bench's sinks read no token or CA."""
    return None


FIELDS = {"reason": "invalid_key", "status": 401, "route": "/v1/chat/completions", "client": "10.0.0.7"}


def _record_times(audit: AuditLog, count: int) -> list[float]:
    times = []
    for i in range(count):
        start = time.perf_counter()
        audit.record("auth.failure", request_id=f"req-{i}", **FIELDS)
        times.append(time.perf_counter() - start)
    return times


def _quantiles(times: list[float]) -> str:
    cuts = statistics.quantiles(times, n=100)
    return f"p50 {cuts[49] * 1e6:7.1f} us   p99 {cuts[98] * 1e6:7.1f} us"


def _wait(predicate: Callable[[], bool], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the sink did not catch up")
        time.sleep(0.01)


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=20_000)
    args = parser.parse_args()
    n = args.records
    rsyslog = None
    try:
        from tests.support.rsyslog import Rsyslog

        rsyslog = Rsyslog().start()
    except Exception as exc:  # pytest.skip's exception too: rsyslogd is not installed
        print(f"no rsyslogd ({type(exc).__name__}): syslog figures left out")
    hec = HECReceiver(token=None).start()
    with tempfile.TemporaryDirectory(prefix="sentient-audit-bench-") as tmp:
        root = Path(tmp)
        sinks: list[dict[str, object]] = [{"name": "hec", "http": {"url": hec.url}, "batchSize": 500}]
        if rsyslog is not None:
            sinks.append({"name": "syslog", "syslog": {"address": rsyslog.address}, "batchSize": 500})
        print(f"{n} records per row; the local output is a file in every row")
        for label, wanted in (("no sink", []), ("HEC", sinks[:1]), ("HEC + syslog", sinks)):
            if label == "HEC + syslog" and rsyslog is None:
                continue
            audit = AuditLog(b"bench-key", root / f"{label}.log")
            sink_set = SinkSet(audit)
            sink_set.apply(
                AuditRuntimeConfig.model_validate({"sinks": wanted, "spoolDir": str(root / label)}), _no_file
            )
            times = _record_times(audit, n)
            print(f"record, {label:<22} {_quantiles(times)}")
            sink_set.close(timeout=60)
            audit.close()

        # Outage: both receivers down while N records are written, then back.
        hec.stop()
        if rsyslog is not None:
            rsyslog.stop()
        audit = AuditLog(b"bench-key", root / "outage.log")
        sink_set = SinkSet(audit)
        sink_set.apply(
            AuditRuntimeConfig.model_validate({"sinks": sinks, "spoolDir": str(root / "outage")}), _no_file
        )
        times = _record_times(audit, n)
        print(f"record, receivers down       {_quantiles(times)}   (spool grows, nothing waits)")
        received_before = len(hec.records)
        for name, forwarder in sink_set.forwarders.items():
            print(
                f"  {name}: {forwarder.spool.pending_records} records, {forwarder.spool.disk_bytes / 1e6:.1f} MB buffered"
            )
        cpu0, wall0 = time.process_time(), time.monotonic()
        hec.start()
        if rsyslog is not None:
            rsyslog.start()
        _wait(lambda: all(f.flushed() for f in sink_set.forwarders.values()))
        wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
        shipped = n * len(sink_set.forwarders)
        print(
            f"drain after the outage: {shipped} records over {len(sink_set.forwarders)} sink(s) in {wall:.2f} s "
            f"({shipped / wall:,.0f} records/s, the sinks' retry backoff included; CPU {cpu / shipped * 1e6:.0f} us "
            "per shipped record, the receivers' included: they run in this process)"
        )
        assert len(hec.records) - received_before == n
        sink_set.close()
        audit.close()
    hec.stop()
    if rsyslog is not None:
        rsyslog.cleanup()


if __name__ == "__main__":
    main()
