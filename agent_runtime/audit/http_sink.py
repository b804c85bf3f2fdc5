"""The HTTP transport: batches of records POSTed as Splunk HEC events or as plain JSON lines.

``splunkHec`` (the default): the body is one HEC event object per record, newline-separated, as
``/services/collector/event`` takes them::

    {"time": 1764421200.123, "host": "...", "source": "...", "sourcetype": "sentient:audit",
     "index": "...", "event": {<the audit record>}}

with ``Authorization: Splunk <token>``. ``jsonLines``: the body is the records' JSON lines
(``application/x-ndjson``) with ``Authorization: Bearer <token>`` when a token is set (Vector,
Fluent Bit, Logstash http inputs). The token file is read for every batch, so a rotated token
applies at once.

A 2xx answer acknowledges the batch. 401, 403, 408, 429 and 5xx (and every network error) mean
"not now": the batch stays in the spool and is sent again. Any other 4xx means the receiver will
never take this batch (HEC: invalid data format): it is dropped and counted, so one bad batch
cannot stop the sink for good.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

import httpx

from agent_runtime.audit.chain import record_head
from agent_runtime.audit.errors import SinkRejected, SinkUnavailable
from agent_runtime.config import HTTPSinkConfig, duration_seconds

HEC_EVENT_PATH = "/services/collector/event"
RETRY_STATUS = frozenset({401, 403, 408, 429})


def sink_url(config: HTTPSinkConfig) -> str:
    """The URL posted to: HEC's event path is added when a splunkHec URL names no path."""
    parts = urlsplit(config.url)
    if config.format == "splunkHec" and parts.path in ("", "/"):
        return urlunsplit(parts._replace(path=HEC_EVENT_PATH))
    return config.url


def _epoch(ts: str) -> float | None:
    try:
        return round(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp(), 3)
    except ValueError:
        return None


class HTTPTransport:
    """One pooled HTTP client posting batches to the receiver."""

    def __init__(self, config: HTTPSinkConfig, read_file: Callable[[str], str | None], hostname: str) -> None:
        self.config = config
        self.read_file = read_file
        self.hostname = hostname
        self.url = sink_url(config)
        # The HEC event around each record, up to its "time" and "event" fields.
        envelope: dict[str, str] = {"host": hostname, "sourcetype": config.sourcetype}
        if config.source:
            envelope["source"] = config.source
        if config.index:
            envelope["index"] = config.index
        self._envelope = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()[:-1]
        self._client: httpx.Client | None = None

    def _connect(self) -> httpx.Client:
        """The pooled client; its CA is read when it is built (a rotated CA builds a new transport)."""
        verify: ssl.SSLContext | bool = True
        tls = self.config.tls
        if tls is not None and tls.ca_file:
            cadata = self.read_file(tls.ca_file)
            if not cadata:
                raise SinkUnavailable(f"the CA file {tls.ca_file} is missing or empty")
            verify = ssl.create_default_context(cadata=cadata)
        self._client = httpx.Client(timeout=duration_seconds(self.config.timeout), verify=verify)
        return self._client

    def body(self, lines: list[bytes]) -> bytes:
        """The request body of a batch (the records are embedded as they are, never re-encoded)."""
        if self.config.format == "jsonLines":
            return b"\n".join(lines) + b"\n"
        events = []
        for line in lines:
            when = _epoch(record_head(line).ts)
            time_field = b',"time":%.3f' % when if when is not None else b""
            events.append(self._envelope + time_field + b',"event":' + line + b"}")
        return b"\n".join(events) + b"\n"

    def _headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json"
            if self.config.format == "splunkHec"
            else "application/x-ndjson"
        }
        token = self.read_file(self.config.token_file) if self.config.token_file else None
        if token:
            scheme = "Splunk" if self.config.format == "splunkHec" else "Bearer"
            headers["Authorization"] = f"{scheme} {token.strip()}"
        return headers

    def send(self, lines: list[bytes]) -> None:
        """POST one batch; raises :class:`SinkUnavailable` (retry) or :class:`SinkRejected` (drop)."""
        client = self._client or self._connect()
        # serverName: the name sent (SNI) and checked in the certificate instead of the URL's host.
        tls = self.config.tls
        extensions = {"sni_hostname": tls.server_name} if tls is not None and tls.server_name else None
        try:
            response = client.post(
                self.url, content=self.body(lines), headers=self._headers(), extensions=extensions
            )
        except httpx.HTTPError as exc:
            raise SinkUnavailable(f"POST {self.url} failed: {type(exc).__name__}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return
        # The receiver's text can be long or echo input; keep a short prefix for the log.
        detail = response.text[:200].replace("\n", " ")
        if status in RETRY_STATUS or status >= 500:
            raise SinkUnavailable(f"POST {self.url}: {status} {detail}")
        raise SinkRejected(f"POST {self.url}: {status} {detail}")

    def close(self) -> None:
        """Close the pooled connections."""
        if self._client is not None:
            self._client.close()
