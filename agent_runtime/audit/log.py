"""The audit log: builds chained records and hands each to the local output and the SIEM sinks.

Records never hold secret values: key ids, reasons, paths, hashes at most.

The request path only formats the record, writes it to the local output (file or stdout) and
appends it to each sink's on-disk spool (:mod:`.spool`); background threads ship the spools
(:mod:`.forwarder`). A sink whose spool overflowed gets, once it has room again, an
``audit.sink_overflow`` record in the chain naming how many records (which ``seq`` range) it
lost, so the receiver's gap is explained by a signed record.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

from agent_runtime.audit.chain import GENESIS, STREAM, compute_mac, encode_line
from agent_runtime.audit.file_sink import FileSink, last_link

log = logging.getLogger("agent_runtime.audit")


class Overflow(Protocol):
    """What a sink lost to a full spool: ``dropped`` records, ``first_seq`` to ``last_seq``."""

    sink: str
    dropped: int
    first_seq: int
    last_seq: int


class RemoteSink(Protocol):
    """A SIEM sink as the audit log sees it (:class:`agent_runtime.audit.forwarder.Forwarder`)."""

    name: str

    def offer(self, line: str, seq: int) -> None:
        """Append one record to the sink's spool; never blocks on the network."""

    def take_overflow(self) -> Overflow | None:
        """The overflow that just ended (the spool accepted a record again), once."""


class AuditLog:
    """Appends chained records to a file or stdout, and to the SIEM sinks; thread-safe."""

    def __init__(
        self,
        key: bytes,
        path: Path | None = None,
        stream: IO[str] | None = None,
        *,
        worker: int | None = None,
    ) -> None:
        self._key = key
        self._lock = threading.Lock()
        self.path = path
        self.worker = worker
        self._seq, self._prev = last_link(path, worker) if path is not None else (0, GENESIS)
        self._file = FileSink(path, stream)
        self._sinks: tuple[RemoteSink, ...] = ()
        # Masks personal data in string fields before the MAC (guardrails.redact.audit); None: off.
        self.redactor: Callable[[str], str] | None = None

    def set_sinks(self, sinks: tuple[RemoteSink, ...]) -> None:
        """Send every record from now on to ``sinks`` too (the caller starts and stops them)."""
        with self._lock:
            self._sinks = sinks

    def record(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one security event; returns the record as written."""
        with self._lock:
            if self.redactor is not None:
                fields = {k: _masked(v, self.redactor) for k, v in fields.items()}
            record = self._append(event, fields)
            for sink in self._sinks:
                overflow = sink.take_overflow()
                if overflow is not None:
                    self._append(
                        "audit.sink_overflow",
                        {
                            "sink": overflow.sink,
                            "dropped": overflow.dropped,
                            "first_seq": overflow.first_seq,
                            "last_seq": overflow.last_seq,
                        },
                    )
            return record

    def _append(self, event: str, fields: dict[str, Any]) -> dict[str, Any]:
        record: dict[str, Any] = {
            "stream": STREAM,
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "seq": self._seq,
            "event": event,
            **fields,
            "prev": self._prev,
        }
        if self.worker is not None:
            record["worker"] = self.worker
        record["mac"] = compute_mac(self._key, record)
        line = encode_line(record)
        self._file.write(line)
        for sink in self._sinks:
            sink.offer(line, self._seq)
        self._seq += 1
        self._prev = record["mac"]
        return record

    def close(self) -> None:
        """Close the file (not stdout)."""
        self._file.close()


def _masked(value: Any, redactor: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return redactor(value)
    if isinstance(value, list):
        return [_masked(v, redactor) for v in value]
    return value


def worker_audit_path(path: str, worker: int) -> str:
    """The file of one worker's chain: ``<path>.worker-<index>``."""
    return f"{path}.worker-{worker}"


def open_audit_log(key_text: str | None, path: str | None, *, worker: int | None = None) -> AuditLog:
    """The audit log the environment asks for (``SENTIENT_AUDIT_LOG`` path or stdout)."""
    if key_text:
        key = key_text.encode()
    else:
        # Without the bound key the chain still detects edits within this
        # process's lifetime, but nobody can verify it later.
        log.warning("no audit key file; the audit chain uses a random per-process key")
        key = secrets.token_bytes(32)
    return AuditLog(key, Path(path) if path else None, worker=worker)
