"""The runtime's small HTTP layer: one exchange, streamed writes, request bodies, connection watch, client limits."""

from agent_runtime.http.exchange import (
    ASGIHandler,
    BodyTooLarge,
    ClientGone,
    Exchange,
    Message,
    Pulse,
    Receive,
    Scope,
    Send,
    count_request,
    read_body,
    supervise,
)

__all__ = [
    "ASGIHandler",
    "BodyTooLarge",
    "ClientGone",
    "Exchange",
    "Message",
    "Pulse",
    "Receive",
    "Scope",
    "Send",
    "count_request",
    "read_body",
    "supervise",
]
