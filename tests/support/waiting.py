"""The one polling helper of the tests, the e2e harness and the benches."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    predicate: Callable[[], Any], what: str = "condition", *, timeout: float = 90.0, interval: float = 0.1
) -> Any:
    """Poll ``predicate()`` until it returns something truthy, and return that value.

    Raises AssertionError (a test failure, not an error) naming ``what`` and the last value
    after ``timeout`` seconds. The timeout is a hang guard, not an assertion about speed.
    """
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last value: {last!r})")
        time.sleep(interval)
