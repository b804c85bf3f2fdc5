"""The audit chain: records as JSON lines chained by HMAC-SHA256, and the verifier.

Each record carries ``seq``, ``prev`` (the ``mac`` of the record before) and
``mac`` = HMAC(key, canonical JSON of the record without ``mac``). Changing,
removing, reordering or inserting a line breaks the chain at that point, and
nobody without the ``audit-key`` file can forge a valid continuation. A chain
starts with ``seq`` 0 and an all-zero ``prev`` (a process restart writing to
stdout starts a new chain; one appending to a file continues the file's chain).

With ``server.workers`` > 1 each worker keeps its own chain: its records carry
``worker`` (its index) and :func:`verify` follows each worker's chain through
interleaved lines (stdout, or a SIEM receiving every worker's records).

The MAC covers the canonical form (sorted keys, no spaces), so a receiver that
parses a record and stores it re-serialized (a Splunk event, an rsyslog line)
still verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
STREAM = "audit"


def _canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def compute_mac(key: bytes, record: dict[str, Any]) -> str:
    """HMAC of a record (its ``mac`` field excluded)."""
    body = {k: v for k, v in record.items() if k != "mac"}
    return hmac.new(key, _canonical(body), hashlib.sha256).hexdigest()


def encode_line(record: dict[str, Any]) -> str:
    """The JSON line of a record as every sink writes it (no newline)."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


# The fields every record starts with (the audit log builds them in this order) and the worker
# index it adds last, before the MAC: read by the sinks without parsing the whole line.
_HEAD = re.compile(rb'^\{"stream":"audit","ts":"([^"]*)","seq":([0-9]+),"event":"((?:[^"\\]|\\.)*)"')
_WORKER = re.compile(rb',"worker":([0-9]+),"mac":"[0-9a-f]*"\}$')


@dataclass(frozen=True, slots=True)
class RecordHead:
    """What a sink puts in its envelope: the record's time, sequence, event and worker."""

    ts: str
    seq: int | None
    event: str
    worker: int | None


def record_head(line: bytes) -> RecordHead:
    """The head fields of an encoded record (a regular expression; a full parse as the fallback)."""
    head = _HEAD.match(line)
    if head is not None:
        worker = _WORKER.search(line)
        event = head.group(3).decode()
        if "\\" in event:
            event = json.loads(b'"' + head.group(3) + b'"')
        return RecordHead(
            head.group(1).decode(), int(head.group(2)), event, int(worker.group(1)) if worker else None
        )
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        return RecordHead("", None, "", None)
    seq, worker = record.get("seq"), record.get("worker")
    return RecordHead(
        str(record.get("ts", "")),
        seq if isinstance(seq, int) else None,
        str(record.get("event", "")),
        worker if isinstance(worker, int) else None,
    )


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
