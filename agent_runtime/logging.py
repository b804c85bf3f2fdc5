"""JSON logs, one object per line, carrying the id of the request being served.

The request id comes from the caller's ``X-Request-ID`` (when it is a sane
token) or is generated, is echoed in the response header, and is attached to
every log line written while the request is served through a context variable.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("sentient_request_id", default=None)

_REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

# Attributes every LogRecord has; anything else was passed with ``extra=``.
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def accept_request_id(value: str | None) -> str | None:
    """The caller's request id if it is safe to log and echo, else None."""
    if value and _REQUEST_ID_PATTERN.match(value):
        return value
    return None


class JSONFormatter(logging.Formatter):
    """Formats records as single-line JSON objects."""

    def format(self, record: logging.LogRecord) -> str:
        """One JSON line."""
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_") and key != "color_message":
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


# Message templates a RepeatFilter tracks at most (uvicorn has a handful).
_MAX_TEMPLATES = 64


class RepeatFilter(logging.Filter):
    """Lets one record per message template through per ``interval`` seconds; counts the rest.

    uvicorn warns once per malformed request ("Invalid HTTP request received."): a client
    sending garbage in a loop would otherwise write a log line per request. The first record of
    a template passes; later ones within ``interval`` are dropped, and the next one to pass
    carries ``suppressed``: how many were dropped since the last.
    """

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._interval = interval
        self._clock = clock
        # template -> (when one last passed, dropped since); bounded by uvicorn's few templates.
        self._seen: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """True when the record is written."""
        if record.levelno < logging.WARNING or record.exc_info is not None:
            return True
        now = self._clock()
        key = str(record.msg)
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self._interval:
            self._seen[key] = (seen[0], seen[1] + 1)
            return False
        if seen is not None or len(self._seen) < _MAX_TEMPLATES:
            self._seen[key] = (now, 0)
        if seen is not None and seen[1]:
            record.suppressed = seen[1]
        return True


def setup_logging(level: str | None = None) -> None:
    """Route every logger (ours and uvicorn's) to stdout as JSON at ``SENTIENT_LOG_LEVEL``."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("SENTIENT_LOG_LEVEL") or "INFO").upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # The server's per-connection warnings are the caller's to trigger: at most one per template
    # per 10 s. A filter on the logger (not the handler) is kept by every later setup_logging.
    errors = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, RepeatFilter) for f in errors.filters):
        errors.addFilter(RepeatFilter())
