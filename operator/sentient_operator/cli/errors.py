"""Errors the CLI reports as one line."""

from __future__ import annotations


class CliError(Exception):
    """A user-facing error: printed as ``error: <message>`` with no trace."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
