"""The Sentient agent protocol: events, their JSON shape, SSE encoding, ULIDs.

Compatible with the Sentient Agent Framework: every event carries
``content_type``, ``event_name``, ``schema_version`` ("1.0"), ``id`` (a ULID,
strictly increasing within a response), ``source`` (the processor id) and
``metadata`` (null or up to 16 simple pairs). A response is a
``text/event-stream`` of ``event: <event_name>`` / ``data: <JSON>`` records
and always ends with one ``done`` event.

Encoding is on the hot path (one call per streamed token), so events are
written straight to bytes with a precompiled JSON encoder instead of going
through model objects; the typed dataclasses below are for readers (the
client, tests).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = "1.0"
DEFAULT_ERROR_CODE = 500
MAX_METADATA_PAIRS = 16

TEXTBLOCK = "atomic.textblock"
JSON = "atomic.json"
TEXT_STREAM = "chunked.text"
ERROR = "atomic.error"
DONE = "atomic.done"
CONTENT_TYPES = frozenset({TEXTBLOCK, JSON, TEXT_STREAM, ERROR, DONE})

ERROR_EVENT_NAME = "error"
DONE_EVENT_NAME = "done"

SSE_CONTENT_TYPE = b"text/event-stream; charset=utf-8"
# An SSE comment: ignored by every client, keeps proxies from closing an idle stream.
HEARTBEAT = b": keep-alive\n\n"

_encode_raw = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_encode_str = json.encoder.encode_basestring

# Characters that str.splitlines() (and so httpx's aiter_lines and many SSE
# clients) treat as line breaks but JSON leaves unescaped; a raw one inside a
# ``data:`` line would cut the event in two. Control characters below 0x20 are
# escaped by the encoder already.


def dumps(value: Any) -> str:
    """Compact JSON text, UTF-8 kept as is except characters some clients split lines on."""
    # A string (a token, a model name: most calls) goes straight to json's C string encoder,
    # which is what JSONEncoder.encode calls for one, without its Python frame.
    text = _encode_str(value) if type(value) is str else _encode_raw(value)
    if "\x85" in text or "\u2028" in text or "\u2029" in text:
        text = text.replace("\x85", "\\u0085").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return text


# ----------------------------------------------------------------------------- ULIDs

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two base32 digits per 10-bit group: 13 table lookups encode a whole ULID
# (base64.b32encode is pure Python in 3.11 and five times slower).
_PAIRS = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)
_SHIFTS = tuple(range(120, -1, -10))


def ulid_to_str(value: int) -> str:
    """Canonical 26-character Crockford base32 text of a 128-bit ULID."""
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


_RANDOM_BITS = 80
_RANDOM_MASK = (1 << _RANDOM_BITS) - 1


def _time_prefix(ms: int) -> str:
    """The first ten characters of a ULID: its 48-bit timestamp, in five 10-bit groups."""
    p = _PAIRS
    return p[ms >> 40 & 1023] + p[ms >> 30 & 1023] + p[ms >> 20 & 1023] + p[ms >> 10 & 1023] + p[ms & 1023]


class UlidGenerator:
    """Monotonic ULIDs: within one millisecond the random part is incremented.

    One generator per process is enough for the protocol's requirement (ids
    strictly increasing within a response) and gives a stronger one (strictly
    increasing across the process, even if the wall clock steps back).
    Thread-safe for custom agents that emit from worker threads.

    The first ten characters of a ULID are exactly its 48-bit timestamp, so
    they are encoded once per millisecond and only the 80 random bits are
    encoded per id (one per streamed token, so this is on the hot path).
    """

    def __init__(self) -> None:
        self._ms = -1
        self._random = 0
        self._prefix = ""
        self._lock = threading.Lock()

    def _advance(self) -> tuple[str, int, int]:
        now = time.time_ns() // 1_000_000
        with self._lock:
            if now > self._ms:
                self._ms = now
                # Uniqueness and order are needed, not secrecy: no syscall per id.
                self._random = random.getrandbits(_RANDOM_BITS)
                self._prefix = _time_prefix(now)
            elif self._random < _RANDOM_MASK:
                self._random += 1
            else:
                # 2**80 ids in one millisecond cannot happen; stay correct anyway.
                self._ms += 1
                self._random = 0
                self._prefix = _time_prefix(self._ms)
            return self._prefix, self._ms, self._random

    def next_int(self) -> int:
        """The next ULID as an integer."""
        _, ms, rand = self._advance()
        return ms << _RANDOM_BITS | rand

    def next(self) -> str:
        """The next ULID as text."""
        prefix, _, rand = self._advance()
        p = _PAIRS
        # Written out rather than a comprehension: in Python 3.11 a comprehension is a call
        # of its own, and this runs twice per request.
        return prefix + "".join(
            (
                p[rand >> 70 & 1023],
                p[rand >> 60 & 1023],
                p[rand >> 50 & 1023],
                p[rand >> 40 & 1023],
                p[rand >> 30 & 1023],
                p[rand >> 20 & 1023],
                p[rand >> 10 & 1023],
                p[rand & 1023],
            )
        )


ULIDS = UlidGenerator()


def new_ulid() -> str:
    """A fresh ULID from the process-wide monotonic generator."""
    return ULIDS.next()


def ulid_timestamp_ms(text: str) -> int:
    """Milliseconds since the epoch encoded in a ULID string."""
    return parse_ulid(text) >> 80


_CROCKFORD_VALUES = {c: i for i, c in enumerate(_CROCKFORD)}


def parse_ulid(text: str) -> int:
    """The integer value of a ULID string; ``ValueError`` if it is not one."""
    if len(text) != 26:
        raise ValueError("a ULID has 26 characters")
    value = 0
    for char in text.upper():
        digit = _CROCKFORD_VALUES.get(char)
        if digit is None:
            raise ValueError(f"invalid ULID character {char!r}")
        value = value << 5 | digit
    if value >> 128:
        raise ValueError("ULID out of range")
    return value


# ----------------------------------------------------------------------------- metadata


def validate_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Check event metadata: at most 16 pairs of simple values (or lists of them)."""
    if metadata is None:
        return None
    if len(metadata) > MAX_METADATA_PAIRS:
        raise ValueError(f"metadata holds at most {MAX_METADATA_PAIRS} pairs")
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise ValueError("metadata keys must be strings")
        if isinstance(value, list):
            if not all(isinstance(item, str | int | float | bool) for item in value):
                raise ValueError(f"metadata {key!r}: lists may hold only strings, numbers and booleans")
        elif not isinstance(value, str | int | float | bool):
            raise ValueError(f"metadata {key!r}: values must be strings, numbers, booleans or lists of them")
    return dict(metadata)


_LINE_END_CHARS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def check_event_name(event_name: str) -> str:
    """Event names go into the SSE ``event:`` line, so they must be one non-empty line."""
    if not event_name or len(event_name.splitlines()) != 1 or event_name[-1] in _LINE_END_CHARS:
        raise ValueError("event_name must be a non-empty single line")
    return event_name


# ----------------------------------------------------------------------------- encoding


def sse(event_name: str, data_json: str) -> bytes:
    """One SSE record."""
    return f"event: {event_name}\ndata: {data_json}\n\n".encode()


def event_dict(
    content_type: str,
    event_name: str,
    event_id: str,
    source: str,
    metadata: Mapping[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """The JSON object of one event."""
    return {
        "content_type": content_type,
        "event_name": event_name,
        "schema_version": SCHEMA_VERSION,
        "id": event_id,
        "source": source,
        "metadata": metadata,
        **fields,
    }


def encode_event(
    content_type: str,
    event_name: str,
    event_id: str,
    source: str,
    metadata: Mapping[str, Any] | None = None,
    **fields: Any,
) -> bytes:
    """An event as one SSE record."""
    return sse(event_name, dumps(event_dict(content_type, event_name, event_id, source, metadata, **fields)))


class ChunkEncoder:
    """Encodes the chunks of one text stream; the constant part is built once.

    Per token only the id, the flag and the content are serialised, which
    keeps the per-chunk cost near one ``json`` call on the text.
    """

    __slots__ = ("_head", "_tail")

    def __init__(self, event_name: str, source: str, stream_id: str) -> None:
        self._head = (
            f"event: {event_name}\ndata: "
            f'{{"content_type":"{TEXT_STREAM}","event_name":{dumps(event_name)},'
            f'"schema_version":"{SCHEMA_VERSION}","source":{dumps(source)},'
            f'"stream_id":{dumps(stream_id)},"id":"'
        )
        self._tail = "\n\n"

    def encode(
        self, event_id: str, content: str, is_complete: bool, metadata: Mapping[str, Any] | None = None
    ) -> bytes:
        """One chunk record."""
        meta = "null" if metadata is None else dumps(metadata)
        flag = "true" if is_complete else "false"
        return (
            f'{self._head}{event_id}","metadata":{meta},"is_complete":{flag},'
            f'"content":{dumps(content)}}}{self._tail}'
        ).encode()


def error_content(
    error_message: str, error_code: int = DEFAULT_ERROR_CODE, details: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Content of an ``atomic.error`` event."""
    content: dict[str, Any] = {"error_message": error_message, "error_code": error_code}
    if details:
        content["details"] = dict(details)
    return content


def error_and_done(
    source: str,
    error_message: str,
    error_code: int = DEFAULT_ERROR_CODE,
    details: Mapping[str, Any] | None = None,
) -> bytes:
    """The two records that end every failed response: ``error`` then ``done``."""
    return encode_event(
        ERROR,
        ERROR_EVENT_NAME,
        new_ulid(),
        source,
        None,
        content=error_content(error_message, error_code, details),
    ) + encode_event(DONE, DONE_EVENT_NAME, new_ulid(), source, None)


# ----------------------------------------------------------------------------- typed events (readers)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Fields every event has."""

    content_type: str
    event_name: str
    id: str
    source: str
    schema_version: str = SCHEMA_VERSION
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TextBlockEvent(Event):
    """``atomic.textblock``: one complete piece of text."""

    content: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DocumentEvent(Event):
    """``atomic.json``: one JSON object."""

    content: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class TextChunkEvent(Event):
    """``chunked.text``: one chunk of a text stream; the closing chunk has ``is_complete``."""

    stream_id: str
    is_complete: bool
    content: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorEvent(Event):
    """``atomic.error``: the request failed."""

    error_message: str
    error_code: int = DEFAULT_ERROR_CODE
    details: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DoneEvent(Event):
    """``atomic.done``: the response is over; always last."""


AnyEvent = TextBlockEvent | DocumentEvent | TextChunkEvent | ErrorEvent | DoneEvent


class ProtocolError(ValueError):
    """A record that is not a valid Sentient event."""


def parse_event(data: Mapping[str, Any]) -> AnyEvent:
    """Build the typed event from its JSON object; ``ProtocolError`` if malformed."""
    try:
        common: dict[str, Any] = {
            "content_type": data["content_type"],
            "event_name": data["event_name"],
            "id": data["id"],
            "source": data["source"],
            "schema_version": data.get("schema_version", SCHEMA_VERSION),
            "metadata": data.get("metadata"),
        }
        content_type = common["content_type"]
        if content_type == TEXT_STREAM:
            return TextChunkEvent(
                **common,
                stream_id=data["stream_id"],
                is_complete=bool(data["is_complete"]),
                content=data.get("content", ""),
            )
        if content_type == TEXTBLOCK:
            return TextBlockEvent(**common, content=data["content"])
        if content_type == JSON:
            return DocumentEvent(**common, content=data["content"])
        if content_type == ERROR:
            content = data["content"]
            return ErrorEvent(
                **common,
                error_message=content["error_message"],
                error_code=int(content.get("error_code", DEFAULT_ERROR_CODE)),
                details=content.get("details"),
            )
        if content_type == DONE:
            return DoneEvent(**common)
    except (KeyError, TypeError) as exc:
        raise ProtocolError(f"malformed event: missing or invalid {exc}") from exc
    raise ProtocolError(f"unknown content_type {content_type!r}")
