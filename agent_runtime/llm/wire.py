"""The bytes of one upstream request: the head of a chain entry built once, the body per call.

Building an ``httpx.Request`` per upstream call (URL, header normalisation, the
transport serialising it again) cost more than the rest of the attempt; a chain
entry's request line and headers are the same on every call but for the API key
and the streaming flag, so :func:`request_bytes` keeps the head per (streaming,
key) and adds only ``content-length`` and the JSON body. The headers are exactly
those the ``httpx.Request`` path sends (``upstream_request``, still used when the
upstream is reached through a proxy).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from agent_runtime.llm.entries import Entry

USER_AGENT = "sentient-agent-runtime"
# Heads kept per entry: two per key (streamed or not); a rotated key's heads are dropped
# with the others when the table is full, and rebuilt on the next call.
_MAX_HEADS = 8

_CONTENT_LENGTH = b"content-length: "

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)
# json's C encoder built once: ``JSONEncoder.encode`` builds one on every call (behind two Python
# frames). Without a check for circular references: a request body is the adapter's own tree of
# dicts, lists, strings and numbers (with the check, an encoding error would leave a stale entry).
_make_encoder: Callable[..., Callable[[Any, int], list[str]]] | None = getattr(
    json.encoder, "c_make_encoder", None
)
_c_encode = (
    _make_encoder(None, _encoder.default, json.encoder.encode_basestring, None, ":", ",", False, False, True)
    if _make_encoder is not None
    else None
)


def encode_json(body: Any) -> str:
    """Compact JSON text of a request body, as ``json.dumps(body, separators=(",", ":"),
    ensure_ascii=False)`` writes it."""
    if _c_encode is None:  # pragma: no cover - CPython has the C encoder
        return _encoder.encode(body)
    return "".join(_c_encode(body, 0))


def headers_of(entry: Entry, api_key: str | None, *, stream: bool) -> dict[str, str]:
    """The request headers of ``entry`` (without Host and Content-Length)."""
    return {
        "user-agent": USER_AGENT,
        **entry.adapter.headers(api_key, entry.config.default_headers, stream=stream),
    }


def upstream_request(
    entry: Entry,
    body: dict[str, Any],
    api_key: str | None,
    *,
    stream: bool,
    extra: Mapping[str, str] | None = None,
) -> httpx.Request:
    """The request as an ``httpx.Request`` (for an ``httpx.AsyncClient``: the proxied path)."""
    headers = headers_of(entry, api_key, stream=stream)
    if extra:
        headers.update(extra)
    return httpx.Request(
        "POST",
        entry.url,
        content=encode_json(body).encode(),
        headers=headers,
        extensions={"timeout": entry.timeout_ext},
    )


def _head(entry: Entry, api_key: str | None, stream: bool) -> bytes:
    """Request line and headers up to the value of ``content-length``."""
    headers = headers_of(entry, api_key, stream=stream)
    url = entry.url
    lines = [b"POST ", url.raw_path, b" HTTP/1.1\r\nhost: ", url.netloc, b"\r\n"]
    for name, value in headers.items():
        # ASCII, as httpx encodes header values: anything else is refused the same way.
        lines += [name.encode("ascii"), b": ", value.encode("ascii"), b"\r\n"]
    lines.append(b"content-length: ")
    head = b"".join(lines)
    # One CR and one LF per line (request line, host, the headers) and no NUL: a value
    # with a line break would start another header (header injection).
    expected = len(headers) + 2
    if head.count(b"\n") != expected or head.count(b"\r") != expected or b"\0" in head:
        raise httpx.LocalProtocolError("refused a header with a CR, LF or NUL character")
    return head


def _extra_lines(extra: Mapping[str, str]) -> bytes:
    """Per-call headers (trace context) as header lines; a CR, LF or NUL in one is refused."""
    lines = b"".join(
        b"%s: %s\r\n" % (name.encode("ascii"), value.encode("ascii")) for name, value in extra.items()
    )
    if lines.count(b"\n") != len(extra) or lines.count(b"\r") != len(extra) or b"\0" in lines:
        raise httpx.LocalProtocolError("refused a header with a CR, LF or NUL character")
    return lines


def request_bytes(
    entry: Entry,
    body: dict[str, Any],
    api_key: str | None,
    *,
    stream: bool,
    extra: Mapping[str, str] | None = None,
) -> bytes:
    """The whole request (head and JSON body) of one upstream call on ``entry``.

    ``extra`` headers (a traced attempt's ``traceparent``) go between the cached head and its
    ``content-length``, so the head stays cached.
    """
    heads = entry.heads
    head = heads.get((stream, api_key))
    if head is None:
        if len(heads) >= _MAX_HEADS:
            heads.clear()
        head = heads[(stream, api_key)] = _head(entry, api_key, stream)
    payload = encode_json(body).encode()
    if extra:
        head = b"%s%s%s" % (head[: -len(_CONTENT_LENGTH)], _extra_lines(extra), _CONTENT_LENGTH)
    return b"%s%d\r\n\r\n%s" % (head, len(payload), payload)
