"""Fewer log lines from the OpenTelemetry SDK while the collector is down.

The SDK logs a warning for every span dropped from a full queue and for every failed export
attempt: with the collector down under load, thousands of lines a second, each formatted on the
event loop (a dropped span is logged where the span ends). The filter lets one line of each kind
through per interval and says how many it held back.
"""

from __future__ import annotations

import logging
import threading
import time

# The loggers of the batch processor and of the OTLP/HTTP exporter.
SDK_LOGGERS = (
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
)
INTERVAL = 60.0


class Throttle(logging.Filter):
    """One record per (logger, message template) per ``interval`` seconds."""

    def __init__(self, interval: float = INTERVAL) -> None:
        super().__init__()
        self.interval = interval
        self._lock = threading.Lock()
        # (logger, template) -> (when the last record went through, records held back since)
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Let the record through when its kind was quiet for ``interval``; count it otherwise."""
        key = (record.name, str(record.msg))
        now = time.monotonic()
        with self._lock:
            last, held = self._seen.get(key, (float("-inf"), 0))
            if now - last < self.interval:
                self._seen[key] = (last, held + 1)
                return False
            self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like this in the last {self.interval:.0f} s)"
        return True


_installed = False


def install() -> None:
    """Put one throttle on the SDK's loggers (once per process)."""
    global _installed
    if _installed:
        return
    throttle = Throttle()
    for name in SDK_LOGGERS:
        logging.getLogger(name).addFilter(throttle)
    _installed = True
