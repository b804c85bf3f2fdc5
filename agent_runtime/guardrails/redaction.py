"""Masking personal data and secrets in log lines and audit records (``guardrails.redact``).

Log lines: one :class:`logging.Filter` on the root handlers rewrites the message and every
string passed with ``extra=`` before the JSON formatter sees them. Audit records: the audit
log calls :func:`Redactor.__call__` on each string field before it computes the record's MAC,
so the chain verifies over what was written.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from agent_runtime.config import PIIEntity
from agent_runtime.guardrails.base import redact
from agent_runtime.guardrails.pii import find_entities

_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class Redactor:
    """Masks the configured entities in a string."""

    def __init__(self, entities: Sequence[PIIEntity]) -> None:
        self.entities = tuple(entities)

    def __call__(self, text: str) -> str:
        """``text`` with each entity replaced by ``[REDACTED:kind]``."""
        spans = find_entities(text, self.entities)
        return redact(text, spans) if spans else text


class RedactingFilter(logging.Filter):
    """Masks log records; its redactor is swapped on config reload (None: off)."""

    def __init__(self) -> None:
        super().__init__()
        self.redactor: Redactor | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops it."""
        redactor = self.redactor
        if redactor is None:
            return True
        message = record.getMessage()
        masked = redactor(message)
        if masked is not message:
            record.msg, record.args = masked, ()
        for key, value in list(record.__dict__.items()):
            if isinstance(value, str) and key not in _STANDARD_ATTRS and not key.startswith("_"):
                setattr(record, key, redactor(value))
        return True


LOG_FILTER = RedactingFilter()


def configure_log_redaction(entities: Sequence[PIIEntity] | None) -> None:
    """Mask ``entities`` in every log line from now on (None: stop masking)."""
    LOG_FILTER.redactor = Redactor(entities) if entities else None
    if entities:
        for handler in logging.getLogger().handlers:
            if LOG_FILTER not in handler.filters:
                handler.addFilter(LOG_FILTER)
