"""Who the caller is (:class:`Principal`) and how a refusal is said (:class:`AuthError`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    ``kind`` is ``apiKey``, ``jwt`` (a signed token), ``introspected`` (an opaque token the
    issuer vouched for) or ``anonymous``; ``roles`` are the roles of ``auth.authorization``
    granted to it (empty when the agent declares none).
    """

    id: str
    kind: str
    tier: str | None = None
    roles: tuple[str, ...] = ()


ANONYMOUS = Principal(id="anonymous", kind="anonymous", tier=None)


class AuthError(Exception):
    """The caller is refused; ``reason`` is a short stable word for metrics and the audit log."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
