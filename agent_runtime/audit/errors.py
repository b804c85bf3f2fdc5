"""How a sink transport fails: for now (retry the batch) or for good (drop the batch)."""

from __future__ import annotations


class SinkUnavailable(Exception):
    """The receiver cannot take the batch now (down, refusing, timing out): keep it and retry."""


class SinkRejected(Exception):
    """The receiver refused the batch as malformed: retrying cannot help, the batch is dropped."""
