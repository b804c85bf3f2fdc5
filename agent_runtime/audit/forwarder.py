"""One SIEM sink at work: its spool, its transport and the thread that ships the one to the other.

The request path calls :meth:`Forwarder.offer` (an append to the spool, no network). The thread
reads batches in order (a partial batch waits :data:`LINGER` for more records first), sends them, and moves the spool's cursor only when the receiver has the batch; while the receiver is down it retries the same batch with exponential backoff (0.2 s up to
10 s), so after an outage everything buffered arrives in the order it was written.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from agent_runtime import metrics
from agent_runtime.audit.errors import SinkRejected, SinkUnavailable
from agent_runtime.audit.spool import Spool

log = logging.getLogger("agent_runtime.audit")

RETRY_INITIAL = 0.2
# How long a partial batch waits for more records before it is sent: a trickle of audited
# requests goes out in batches (at most 5 sends a second per sink), not one send per record.
LINGER = 0.2
RETRY_MAX = 10.0
BATCH_BYTES = 1024 * 1024


class Transport(Protocol):
    """Sends a batch of JSON lines to one receiver."""

    def send(self, lines: list[bytes]) -> None:
        """Deliver the batch, or raise SinkUnavailable / SinkRejected."""

    def close(self) -> None:
        """Release connections."""


@dataclass(slots=True)
class OverflowReport:
    """Records a sink lost while its spool was full: how many, and their ``seq`` range."""

    sink: str
    dropped: int
    first_seq: int
    last_seq: int


class Forwarder:
    """Spool + transport + shipping thread of one sink."""

    def __init__(self, name: str, spool: Spool, transport: Transport, *, batch_records: int = 100) -> None:
        self.name = name
        self.spool = spool
        self.transport = transport
        self.batch_records = batch_records
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._deadline = float("inf")
        self._thread = threading.Thread(target=self._run, name=f"audit-sink-{name}", daemon=True)
        self._next_transport: Transport | None = None
        # Overflow bookkeeping, touched only by offer() (called under the audit log's lock).
        self._dropping: OverflowReport | None = None
        self._ended: OverflowReport | None = None
        self._buffered = metrics.AUDIT_SINK_RECORDS.labels(sink=name, outcome="buffered")
        self._shipped = metrics.AUDIT_SINK_RECORDS.labels(sink=name, outcome="shipped")
        self._dropped_full = metrics.AUDIT_SINK_RECORDS.labels(sink=name, outcome="dropped_buffer_full")
        self._rejected = metrics.AUDIT_SINK_RECORDS.labels(sink=name, outcome="dropped_rejected")
        self._dropped_io = metrics.AUDIT_SINK_RECORDS.labels(sink=name, outcome="dropped_io_error")
        self._up = metrics.AUDIT_SINK_UP.labels(sink=name)
        self._bytes = metrics.AUDIT_SINK_BUFFER_BYTES.labels(sink=name)
        self._pending = metrics.AUDIT_SINK_BUFFER_RECORDS.labels(sink=name)
        self._publish()

    def start(self) -> None:
        """Start shipping (what a previous process left in the spool goes first)."""
        self._thread.start()

    def replace_transport(self, transport: Transport, batch_records: int) -> None:
        """Ship to ``transport`` from the next batch on (a reload; the spool and its backlog stay)."""
        self.batch_records = batch_records
        self._next_transport = transport
        self._wake.set()

    # ------------------------------------------------------------------ request path

    def offer(self, line: str, seq: int) -> None:
        """Buffer one record; when the spool is full the record is dropped and counted."""
        try:
            accepted = self.spool.append(line.encode() + b"\n")
        except OSError as exc:
            # A failing disk must not fail the request: the record is dropped for this sink.
            self._dropped_io.inc()
            log.error("audit sink %s: cannot write its spool, record dropped: %s", self.name, exc)
            return
        if accepted:
            self._buffered.inc()
            if self._dropping is not None:
                self._ended, self._dropping = self._dropping, None
                log.warning(
                    "audit sink %s: buffer has room again; %d record(s) were dropped (seq %d to %d)",
                    self.name,
                    self._ended.dropped,
                    self._ended.first_seq,
                    self._ended.last_seq,
                )
            self._wake.set()
        else:
            self._dropped_full.inc()
            if self._dropping is None:
                self._dropping = OverflowReport(self.name, 1, seq, seq)
                log.error(
                    "audit sink %s: buffer full (%d bytes); dropping the newest records until it ships",
                    self.name,
                    self.spool.max_bytes,
                )
            else:
                self._dropping.dropped += 1
                self._dropping.last_seq = seq
        self._publish()

    def take_overflow(self) -> OverflowReport | None:
        """The overflow that ended with the last accepted record, once (the audit log records it)."""
        ended, self._ended = self._ended, None
        return ended

    def _publish(self) -> None:
        self._bytes.set(self.spool.disk_bytes)
        self._pending.set(self.spool.pending_records)

    # ------------------------------------------------------------------ shipping thread

    def _run(self) -> None:
        backoff = RETRY_INITIAL
        down = False
        lingered = False
        try:
            while not (self._stopping.is_set() and time.monotonic() > self._deadline):
                if self._next_transport is not None:
                    self.transport.close()
                    self.transport, self._next_transport = self._next_transport, None
                try:
                    lines, position = self.spool.read(self.batch_records, BATCH_BYTES)
                except OSError as exc:
                    log.error("audit sink %s: cannot read its spool: %s", self.name, exc)
                    self._stopping.wait(RETRY_MAX)
                    continue
                if position is None:
                    self.spool.sync()
                    if self._stopping.is_set():
                        break
                    self._wake.wait(self.spool.fsync_interval or 1.0)
                    self._wake.clear()
                    continue
                if len(lines) < self.batch_records and not lingered and not self._stopping.is_set():
                    # A partial batch: let more records gather (one wait per batch), then read again.
                    lingered = True
                    self._stopping.wait(LINGER)
                    continue
                lingered = False
                try:
                    self.transport.send(lines)
                except SinkRejected as exc:
                    self.spool.commit(position)
                    self._rejected.inc(len(lines))
                    log.error(
                        "audit sink %s: %d record(s) rejected and dropped: %s", self.name, len(lines), exc
                    )
                    continue
                except SinkUnavailable as exc:
                    self._up.set(0)
                    if not down:
                        log.warning("audit sink %s unavailable, buffering: %s", self.name, exc)
                        down = True
                    if self._stopping.is_set():
                        break
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, RETRY_MAX)
                    continue
                except Exception:
                    # A bug in a transport must not end the thread: the batch stays and is retried.
                    log.exception("audit sink %s: unexpected error while sending", self.name)
                    self._up.set(0)
                    if self._stopping.is_set():
                        break
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, RETRY_MAX)
                    continue
                self.spool.commit(position)
                self._shipped.inc(len(lines))
                self._up.set(1)
                self._publish()
                backoff = RETRY_INITIAL
                if down:
                    log.info("audit sink %s is reachable again; shipping the buffer", self.name)
                    down = False
        finally:
            self.transport.close()
            self.spool.close()
            self._publish()

    def stop(self, timeout: float) -> None:
        """Ship what is buffered for at most ``timeout`` s, then stop; the rest stays in the spool."""
        self.request_stop(timeout)
        self.join()

    def request_stop(self, timeout: float) -> None:
        """Ask the thread to ship for at most ``timeout`` more seconds, then stop (does not wait)."""
        self._deadline = time.monotonic() + timeout
        self._stopping.set()
        self._wake.set()

    def join(self) -> None:
        """Wait for the thread asked to stop (its last send may take up to the transport's timeout)."""
        if self._thread.ident is None:
            # Never started: nothing else will close them.
            self.transport.close()
            self.spool.close()
        elif self._thread.is_alive():
            self._thread.join(max(0.0, self._deadline - time.monotonic()) + 10.0)

    def flushed(self) -> bool:
        """Nothing waits in the spool."""
        return self.spool.pending_records == 0
