"""RepeatFilter: the server's caller-triggered warnings reach the log once per template per interval."""

from __future__ import annotations

import logging
import sys

from agent_runtime.logging import RepeatFilter


def record(msg: str, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.error", level, __file__, 1, msg, (), None)


def test_one_record_per_template_per_interval_and_the_next_says_how_many_were_dropped() -> None:
    now = [100.0]
    repeats = RepeatFilter(interval=10.0, clock=lambda: now[0])
    assert repeats.filter(record("Invalid HTTP request received."))
    assert not any(repeats.filter(record("Invalid HTTP request received.")) for _ in range(99))
    # Another template is its own.
    assert repeats.filter(record("Unsupported upgrade request."))
    now[0] += 10.0
    again = record("Invalid HTTP request received.")
    assert repeats.filter(again)
    assert getattr(again, "suppressed", None) == 99
    quiet = record("Invalid HTTP request received.")
    now[0] += 10.0
    assert repeats.filter(quiet) and not hasattr(quiet, "suppressed")


def test_info_records_and_tracebacks_always_pass() -> None:
    repeats = RepeatFilter(interval=10.0, clock=lambda: 0.0)
    assert all(repeats.filter(record("Started server process", logging.INFO)) for _ in range(5))
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        failures = []
        for _ in range(3):
            r = record("Exception in ASGI application", logging.ERROR)
            r.exc_info = sys.exc_info()
            failures.append(repeats.filter(r))
    assert all(failures)
