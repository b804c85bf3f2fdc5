"""The bounded on-disk buffer of one sink: segment files of JSON lines, shipped in order.

Layout of a spool directory:

- ``<index>.seg`` (zero-padded): records as JSON lines, appended; a new segment starts when the
  last one reaches ``segment_bytes``; a segment is deleted once every record in it is shipped;
- ``cursor``: ``<index> <offset>``, the first byte the receiver has not acknowledged, rewritten
  atomically (write then rename) after every shipped batch.

Durability (the fsync policy): an append is one ``write`` into the kernel before the request goes
on, so a crash of the process loses nothing. ``fsync_interval`` > 0 (the default is 1 s): the
shipping thread fsyncs the segments (and the directory) at most that long after an append, so a
crash of the node loses at most the last interval; ``fsync_interval`` 0 fsyncs on every append,
in the request path (costs a disk flush per audited request). The cursor is not fsynced: after a
node crash the last batches may be shipped twice (at least once, never lost within the cap).

Full: when the segments hold ``max_bytes``, :meth:`Spool.append` refuses the record (the newest
records are dropped; what is buffered is kept and shipped in order, so the receiver gets an
unbroken run up to the gap). The caller counts and reports the drop.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

SEGMENT_SUFFIX = ".seg"
CURSOR_FILE = "cursor"
MAX_SEGMENT_BYTES = 8 * 1024 * 1024
MIN_SEGMENT_BYTES = 64 * 1024


@dataclass(slots=True)
class _Segment:
    index: int
    size: int
    records: int


@dataclass(frozen=True, slots=True)
class Position:
    """Where a read batch ends: commit it once the receiver has the batch."""

    index: int
    offset: int
    records: int


def _segment_path(directory: Path, index: int) -> Path:
    return directory / f"{index:012d}{SEGMENT_SUFFIX}"


def _scan(path: Path, offset: int) -> tuple[int, int, int]:
    """(size, records, records from ``offset`` on) of a segment, read in chunks; a record cut by
    a crash mid-write (no newline) was never whole, so never shipped: it is cut off."""
    size = records = after = whole = 0
    with path.open("r+b") as handle:
        while chunk := handle.read(1 << 20):
            newlines = chunk.count(b"\n")
            if newlines:
                records += newlines
                whole = size + chunk.rfind(b"\n") + 1
                if size + len(chunk) > offset:
                    after += chunk[max(0, offset - size) :].count(b"\n")
            size += len(chunk)
        if whole < size:
            handle.truncate(whole)
    return whole, records, after


class Spool:
    """Append from any thread (the request path), read and commit from one shipping thread."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        *,
        fsync_interval: float = 1.0,
        segment_bytes: int | None = None,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.fsync_interval = fsync_interval
        self.segment_bytes = segment_bytes or max(MIN_SEGMENT_BYTES, min(MAX_SEGMENT_BYTES, max_bytes // 8))
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._cursor = (0, 0)
        self._pending = 0
        self._bytes = 0
        self._out: BinaryIO | None = None
        self._retired: list[BinaryIO] = []
        self._dirty = False
        self._synced_at = time.monotonic()
        directory.mkdir(parents=True, exist_ok=True)
        self._load()

    # ------------------------------------------------------------------ state

    @property
    def pending_records(self) -> int:
        """Records not yet acknowledged by the receiver."""
        return self._pending

    @property
    def disk_bytes(self) -> int:
        """Bytes of the segments on disk (what the cap counts)."""
        return self._bytes

    def _load(self) -> None:
        """Pick up what a previous process left: its segments and cursor; cut a torn last line."""
        indexes = sorted(
            int(p.name[: -len(SEGMENT_SUFFIX)])
            for p in self.directory.glob("*" + SEGMENT_SUFFIX)
            if p.name[: -len(SEGMENT_SUFFIX)].isdigit()
        )
        cursor_index, cursor_offset = self._read_cursor()
        for index in indexes:
            path = _segment_path(self.directory, index)
            if index < cursor_index:
                path.unlink(missing_ok=True)  # shipped before the restart
                continue
            size, records, after_cursor = _scan(path, cursor_offset if index == cursor_index else 0)
            self._segments.append(_Segment(index, size, records))
            self._pending += after_cursor
        if self._segments and self._segments[0].index == cursor_index:
            self._cursor = (cursor_index, min(cursor_offset, self._segments[0].size))
        elif self._segments:
            self._cursor = (self._segments[0].index, 0)
        else:
            self._cursor = (cursor_index, 0)
        self._bytes = sum(s.size for s in self._segments)

    def _read_cursor(self) -> tuple[int, int]:
        try:
            index, offset = (self.directory / CURSOR_FILE).read_text().split()
            return int(index), int(offset)
        except (OSError, ValueError):
            return 0, 0

    # ------------------------------------------------------------------ request path

    def append(self, data: bytes) -> bool:
        """Buffer one record (a line ending in newline); False when the spool is full."""
        with self._lock:
            if self._bytes + len(data) > self.max_bytes:
                return False
            last = self._segments[-1] if self._segments else None
            if last is None or last.size >= self.segment_bytes or self._out is None:
                last = self._open_segment(last)
            out = self._out
            assert out is not None
            view = memoryview(data)
            while view:
                view = view[out.write(view) or 0 :]
            last.size += len(data)
            last.records += 1
            self._bytes += len(data)
            self._pending += 1
            if self.fsync_interval <= 0:
                os.fsync(out.fileno())
            else:
                self._dirty = True
            return True

    def _open_segment(self, last: _Segment | None) -> _Segment:
        if last is not None and last.size < self.segment_bytes:
            # Reopened after a restart: keep appending to the last segment.
            self._out = _segment_path(self.directory, last.index).open("ab", buffering=0)
            return last
        if self._out is not None:
            self._retired.append(self._out)  # fsynced and closed by the shipping thread
        index = last.index + 1 if last is not None else self._cursor[0]
        self._out = _segment_path(self.directory, index).open("ab", buffering=0)
        segment = _Segment(index, 0, 0)
        self._segments.append(segment)
        self._dirty = True
        return segment

    # ------------------------------------------------------------------ shipping thread

    def read(self, max_records: int, max_bytes: int) -> tuple[list[bytes], Position | None]:
        """The next records in order (at most ``max_records``, about ``max_bytes``), from one segment."""
        with self._lock:
            self._drop_finished()
            if self._pending == 0 or not self._segments:
                return [], None
            index, offset = self._cursor
            end = self._segments[0].size
        if offset >= end:
            return [], None
        with _segment_path(self.directory, index).open("rb") as handle:
            handle.seek(offset)
            chunk = handle.read(min(end - offset, max_bytes))
            if b"\n" not in chunk:
                chunk += handle.readline()  # one record larger than max_bytes still goes alone
        lines = chunk.split(b"\n")[:-1][:max_records]
        consumed = sum(len(line) + 1 for line in lines)
        return lines, Position(index, offset + consumed, len(lines))

    def commit(self, position: Position) -> None:
        """The receiver has everything up to ``position``: move the cursor, delete shipped segments."""
        with self._lock:
            self._cursor = (position.index, position.offset)
            self._pending -= position.records
            self._drop_finished()
            index, offset = self._cursor
        tmp = self.directory / (CURSOR_FILE + ".tmp")
        tmp.write_text(f"{index} {offset}\n")
        tmp.replace(self.directory / CURSOR_FILE)

    def _drop_finished(self) -> None:
        # Under the lock. The last segment stays (it is being appended to).
        while len(self._segments) > 1 and self._cursor == (self._segments[0].index, self._segments[0].size):
            done = self._segments.pop(0)
            _segment_path(self.directory, done.index).unlink(missing_ok=True)
            self._bytes -= done.size
            self._cursor = (self._segments[0].index, 0)

    def sync(self, force: bool = False) -> None:
        """fsync what was appended, when ``fsync_interval`` has passed since the last time (or ``force``)."""
        now = time.monotonic()
        with self._lock:
            if not self._dirty or (not force and now - self._synced_at < self.fsync_interval):
                return
            retired, self._retired = self._retired, []
            # A duplicate descriptor: the flush runs outside the lock, so appends never wait for it.
            fd = os.dup(self._out.fileno()) if self._out is not None else None
            self._dirty = False
            self._synced_at = now
        for handle in retired:
            with contextlib.suppress(OSError):
                os.fsync(handle.fileno())
            handle.close()
        if fd is not None:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def close(self) -> None:
        """fsync and close the segment being written."""
        self.sync(force=True)
        with self._lock:
            out, self._out = self._out, None
        if out is not None:
            out.close()
