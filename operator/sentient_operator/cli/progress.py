"""Progress for anything the CLI waits on: a spinner on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import TextIO

import click

_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class Progress:
    """``with Progress("port-forwarding svc/x"): ...`` shows what is being waited for and how long.

    On a terminal a spinner with the elapsed time redraws one line; elsewhere
    (CI logs, pipes) one line is printed when waiting starts and one when it
    ends, so logs stay readable. Output goes to stderr: stdout stays data.
    """

    def __init__(self, message: str, stream: TextIO | None = None) -> None:
        self.message = message
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def elapsed(self) -> float:
        """Seconds since the wait began."""
        return time.monotonic() - self.started

    def update(self, message: str) -> None:
        """Change what is being waited for (e.g. a retry)."""
        self.message = message
        if not self.tty:
            click.echo(f"{message} ...", err=True)

    def _spin(self) -> None:
        frame = 0
        while not self._stop.wait(0.1):
            self.stream.write(
                f"\r\x1b[2K{_FRAMES[frame % len(_FRAMES)]} {self.message} ({self.elapsed:.1f}s)"
            )
            self.stream.flush()
            frame += 1

    def __enter__(self) -> Progress:
        self.started = time.monotonic()
        if self.tty:
            self._thread = threading.Thread(target=self._spin, name="progress", daemon=True)
            self._thread.start()
        else:
            click.echo(f"{self.message} ...", err=True)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
        outcome = "done" if exc_type is None else "failed"
        click.secho(
            f"{self.message}: {outcome} ({self.elapsed:.1f}s)",
            err=True,
            fg=None if exc_type is None else "red",
            dim=exc_type is None,
        )
