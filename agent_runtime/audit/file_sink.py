"""The local audit output: a file (continuing its chain across restarts) or stdout."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import IO

from agent_runtime.audit.chain import GENESIS, STREAM

log = logging.getLogger("agent_runtime.audit")


def last_link(path: Path, worker: int | None) -> tuple[int, str]:
    """(next seq, mac of the last record) of ``worker``'s chain in ``path``; a new chain when none."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 65536))
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return 0, GENESIS
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if (
            isinstance(record, dict)
            and record.get("stream") == STREAM
            and "mac" in record
            and record.get("worker") == worker
        ):
            return int(record.get("seq", -1)) + 1, str(record["mac"])
    return 0, GENESIS


class FileSink:
    """Writes each line at once (flushed): a file opened for append, or a stream (stdout)."""

    def __init__(self, path: Path | None = None, stream: IO[str] | None = None) -> None:
        self.path = path
        if path is not None:
            self._out: IO[str] = path.open("a", encoding="utf-8")
            self._owned = True
        else:
            self._out = stream or sys.stdout
            self._owned = False

    def write(self, line: str) -> None:
        """Append one line; an I/O error is logged, never raised into the request."""
        try:
            self._out.write(line + "\n")
            self._out.flush()
        except (OSError, ValueError):
            log.exception("cannot write the audit log")

    def close(self) -> None:
        """Close the file (not stdout)."""
        if self._owned:
            self._out.close()
