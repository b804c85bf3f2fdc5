"""Audit log of security events, as JSON lines chained by HMAC-SHA256.

Each record carries ``seq``, ``prev`` (the ``mac`` of the record before) and
``mac`` = HMAC(key, canonical JSON of the record without ``mac``). Changing,
removing, reordering or inserting a line breaks the chain at that point, and
nobody without the ``audit-key`` file can forge a valid continuation. A chain
starts with ``seq`` 0 and an all-zero ``prev`` (a process restart writing to
stdout starts a new chain; one appending to a file continues the file's chain).

With ``server.workers`` > 1 each worker keeps its own chain: its records carry
``worker`` (its index), a file path gets the suffix ``.worker-<index>``, and
:func:`verify` follows each worker's chain through interleaved lines (stdout).

Records never hold secret values: key ids, reasons, paths, hashes at most.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("agent_runtime.audit")

GENESIS = "0" * 64
STREAM = "audit"


def _canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def compute_mac(key: bytes, record: dict[str, Any]) -> str:
    """HMAC of a record (its ``mac`` field excluded)."""
    body = {k: v for k, v in record.items() if k != "mac"}
    return hmac.new(key, _canonical(body), hashlib.sha256).hexdigest()


class AuditLog:
    """Appends chained records to a file or stdout; thread-safe."""

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
        self._seq = 0
        self._prev = GENESIS
        # Masks personal data in string fields before the MAC (guardrails.redact.audit); None: off.
        self.redactor: Callable[[str], str] | None = None
        if path is not None:
            self._resume(path)
            self._out: IO[str] = path.open("a", encoding="utf-8")
            self._owned = True
        else:
            self._out = stream or sys.stdout
            self._owned = False

    def _resume(self, path: Path) -> None:
        """Continue the chain of an existing file (the last valid record)."""
        try:
            with path.open("rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(0, size - 65536))
                lines = handle.read().splitlines()
        except FileNotFoundError:
            return
        for line in reversed(lines):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if (
                isinstance(record, dict)
                and record.get("stream") == STREAM
                and "mac" in record
                and record.get("worker") == self.worker
            ):
                self._seq = int(record.get("seq", -1)) + 1
                self._prev = str(record["mac"])
                return

    def record(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one security event; returns the record as written."""
        with self._lock:
            if self.redactor is not None:
                fields = {k: _masked(v, self.redactor) for k, v in fields.items()}
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
            try:
                self._out.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n")
                self._out.flush()
            except (OSError, ValueError):
                log.exception("cannot write the audit log")
            self._seq += 1
            self._prev = record["mac"]
            return record

    def close(self) -> None:
        """Close the file (not stdout)."""
        if self._owned:
            self._out.close()


def _masked(value: Any, redactor: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return redactor(value)
    if isinstance(value, list):
        return [_masked(v, redactor) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of :func:`verify`: ``ok``, else the 1-based ``line`` where the chain breaks."""

    ok: bool
    records: int
    line: int | None = None
    reason: str | None = None


def verify(lines: Iterable[str | bytes], key: bytes) -> VerifyResult:
    """Check a chain (one per worker); lines that are not audit records (other logs on stdout) are skipped."""
    # worker index (None: a single process) -> (mac of its last record, next seq)
    chains: dict[object, tuple[str, int]] = {}
    count = 0
    for number, raw in enumerate(lines, start=1):
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        text = text.strip()
        if not text:
            continue
        try:
            record = json.loads(text)
        except ValueError:
            if '"stream":"audit"' in text:
                return VerifyResult(False, count, number, "not valid JSON")
            continue
        if not isinstance(record, dict) or record.get("stream") != STREAM:
            continue
        mac = record.get("mac")
        if not isinstance(mac, str) or not hmac.compare_digest(mac, compute_mac(key, record)):
            return VerifyResult(False, count, number, "record does not match its MAC")
        worker = record.get("worker")
        prev, expected_seq = chains.get(worker, (GENESIS, 0))
        seq = record.get("seq")
        if seq == 0 and record.get("prev") == GENESIS:
            # A new chain (process restart); its MAC proves it was written with the key.
            prev, expected_seq = GENESIS, 0
        if seq != expected_seq:
            return VerifyResult(False, count, number, f"sequence {seq} where {expected_seq} was expected")
        if record.get("prev") != prev:
            return VerifyResult(False, count, number, "chain broken: previous record missing or changed")
        chains[worker] = (mac, expected_seq + 1)
        count += 1
    return VerifyResult(True, count)


def verify_file(path: Path, key: bytes) -> VerifyResult:
    """:func:`verify` over a file."""
    with path.open("rb") as handle:
        return verify(handle, key)


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


def main(argv: list[str] | None = None) -> int:
    """``python -m agent_runtime.audit LOG KEYFILE``: verify a chain, exit 1 where it breaks."""
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 2:
        print("usage: python -m agent_runtime.audit LOG_FILE KEY_FILE", file=sys.stderr)
        return 2
    key = Path(args[1]).read_text().rstrip("\r\n").encode()
    result = verify_file(Path(args[0]), key)
    if result.ok:
        print(f"ok: {result.records} records")
        return 0
    print(f"broken at line {result.line}: {result.reason}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
