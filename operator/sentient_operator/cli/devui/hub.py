"""What the dashboard shows, gathered in the ``sentient dev`` process.

Three sources feed one :class:`Hub`:

- the proxy: every request as it passes (method, path, headers with credentials masked,
  the body, the response status and its events or body), keyed by ``x-request-id``;
- the serving runtime's capture bus (``/_dev/bus``, followed by ``feed.py``): the caller,
  rate-limit decision, guardrail verdicts, upstream attempts, retries, failovers, breaker
  changes and the runtime's own latency, filed under the same request id;
- the dev loop: reloads (which generation, how long after the edit, or why it failed) and
  the effective config of the serving generation.

Everything is bounded (requests, events per request, captured bytes, reloads, metric
points). Changes are published on the hub's own :class:`~agent_runtime.devbus.DevBus`,
which the dashboard's ``/_dev/api/stream`` relays to the browser.
"""

from __future__ import annotations

import codecs
import json
import re
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from agent_runtime.client import LineSplitter, SSEParser
from agent_runtime.config import RuntimeConfig
from agent_runtime.devbus import DevBus

MAX_REQUESTS = 300
MAX_EVENTS = 2000
MAX_BODY = 64 * 1024
MAX_RELOADS = 100
HISTORY = 120  # metric points, one a second
LATENCY_WINDOW = 30.0  # seconds of finished requests the percentiles are taken over

_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "cookie", "proxy-authorization"})
_SECRET_KEY = re.compile(r"(secret|password|passwd|token|api_?key|apikey|authorization|hash|private)", re.I)
REDACTED = "••••• (redacted)"


def redact_headers(headers: list[tuple[str, str]]) -> dict[str, str]:
    """Request headers as shown: credentials masked (a replay asks for the key again)."""
    return {k: (REDACTED if k.lower() in _SECRET_HEADERS else v) for k, v in headers}


def redact_config(value: Any, key: str = "") -> Any:
    """A config tree with every value under a secret-looking key masked (file paths kept)."""
    if isinstance(value, dict):
        return {k: redact_config(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_config(v, key) for v in value]
    if value is None or isinstance(value, bool) or not _SECRET_KEY.search(key):
        return value
    if key.lower().endswith(("file", "files", "path", "ttl", "header", "tokens")):
        return value
    return REDACTED


def _text(data: bytes) -> str:
    if len(data) > MAX_BODY:
        return data[:MAX_BODY].decode("utf-8", "replace") + f"… ({len(data)} bytes, cut)"
    return data.decode("utf-8", "replace")


@dataclass
class Record:
    """One request as the dashboard shows it."""

    id: str
    at: float
    method: str
    path: str
    generation: int | None
    headers: dict[str, str]
    body: str
    status: int | None = None
    ms: float | None = None
    done: bool = False
    note: str = ""
    route: str | None = None
    caller: dict[str, Any] | None = None
    runtime_ms: float | None = None
    provider: str | None = None
    model: str | None = None
    attempts: int = 0
    retries: int = 0
    failovers: list[dict[str, Any]] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    ratelimit: dict[str, Any] | None = None
    guardrails: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    runtime: list[dict[str, Any]] = field(default_factory=list)
    response_body: str = ""
    content_type: str = ""
    started: float = field(default_factory=time.monotonic)
    _parser: SSEParser = field(default_factory=SSEParser, repr=False)
    _splitter: LineSplitter = field(default_factory=LineSplitter, repr=False)
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"), repr=False
    )
    _captured: int = field(default=0, repr=False)

    def summary(self) -> dict[str, Any]:
        """The row of the live view."""
        return {
            "id": self.id,
            "at": self.at,
            "method": self.method,
            "path": self.path,
            "generation": self.generation,
            "status": self.status,
            "ms": self.ms,
            "done": self.done,
            "note": self.note,
            "route": self.route,
            "caller": self.caller,
            "provider": self.provider,
            "model": self.model,
            "attempts": self.attempts,
            "retries": self.retries,
            "failovers": len(self.failovers),
            "tokens": {"input": self.input_tokens, "output": self.output_tokens},
            "ratelimit": self.ratelimit,
            "guardrails": [f"{g.get('check')}:{g.get('action')}" for g in self.guardrails],
            "events": len(self.events),
            "prompt": _prompt(self.body) if self.path == "/assist" else None,
        }

    def detail(self) -> dict[str, Any]:
        """Everything captured: the request, its events, the runtime's decisions."""
        return self.summary() | {
            "request": {"method": self.method, "path": self.path, "headers": self.headers, "body": self.body},
            "response": {
                "status": self.status,
                "content_type": self.content_type,
                "body": self.response_body,
            },
            "stream": self.events,
            "runtime": self.runtime,
            "failover_detail": self.failovers,
            "guardrail_detail": self.guardrails,
            "runtime_ms": self.runtime_ms,
        }


def _prompt(body: str) -> str | None:
    try:
        data = json.loads(body)
        return str(data["query"]["prompt"])[:200]
    except (ValueError, KeyError, TypeError):
        return None


class Hub:
    """Requests, reloads, config and metrics of one ``sentient dev`` session."""

    def __init__(self) -> None:
        self.bus = DevBus(capacity=1000)
        self.requests: OrderedDict[str, Record] = OrderedDict()
        self.reloads: deque[dict[str, Any]] = deque(maxlen=MAX_RELOADS)
        self.config: dict[str, Any] = {}
        self.notes: list[str] = []
        self.breakers: dict[str, str] = {}
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.generation: int | None = None
        self.closed = False
        # (end time, latency ms, error) of finished requests and (time, count) of tokens, for the metrics.
        self._finished: deque[tuple[float, float, bool]] = deque(maxlen=10_000)
        self._tokens: deque[tuple[float, int]] = deque(maxlen=10_000)

    # ------------------------------------------------------------------ proxy side

    def request_started(
        self, request_id: str, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        """A request reached the proxy."""
        record = Record(
            id=request_id,
            at=time.time(),
            method=method,
            path=path,
            generation=self.generation,
            headers=redact_headers(headers),
            body=_text(body),
        )
        self.requests[request_id] = record
        while len(self.requests) > MAX_REQUESTS:
            self.requests.popitem(last=False)
        self._changed(record)

    def response_started(self, request_id: str, status: int, content_type: str) -> None:
        """The runtime answered with a status."""
        record = self.requests.get(request_id)
        if record is not None:
            record.status = status
            record.content_type = content_type

    def response_chunk(self, request_id: str, chunk: bytes) -> None:
        """Bytes of the answer: SSE is split into events, anything else kept as text (bounded)."""
        record = self.requests.get(request_id)
        if record is None or record._captured > MAX_BODY * 4:
            return
        record._captured += len(chunk)
        if not record.content_type.startswith("text/event-stream"):
            record.response_body = _text(record.response_body.encode() + chunk)
            return
        for line in record._splitter.feed(record._decoder.decode(chunk)):
            parsed = record._parser.feed(line)
            if parsed is None or len(record.events) >= MAX_EVENTS:
                continue
            name, data = parsed
            try:
                payload: Any = json.loads(data)
            except ValueError:
                payload = data
            event = {
                "t": round((time.monotonic() - record.started) * 1000, 1),
                "event": name,
                "data": payload,
            }
            record.events.append(event)
            self.bus.publish("event", record.id, event=event)

    def request_finished(self, request_id: str, status: int, note: str = "") -> None:
        """The response ended (or failed) at the proxy."""
        record = self.requests.get(request_id)
        if record is None:
            return
        record.status = status
        record.note = note.strip()
        record.done = True
        record.ms = round((time.monotonic() - record.started) * 1000, 1)
        self._finished.append((time.monotonic(), record.ms, status >= 400))
        self._changed(record)

    # ------------------------------------------------------------------ runtime side

    def runtime_event(self, event: dict[str, Any]) -> None:
        """One event of the serving runtime's capture bus."""
        kind = event.get("kind")
        if kind == "breaker":
            self.breakers[str(event.get("provider"))] = str(event.get("state"))
            return
        record = self.requests.get(str(event.get("request_id")))
        if record is None:
            return
        if len(record.runtime) < MAX_EVENTS:
            record.runtime.append({k: v for k, v in event.items() if k not in ("seq", "request_id")})
        if kind == "request.start":
            record.route = event.get("route")
        elif kind == "request.end":
            record.caller = event.get("caller")
            record.runtime_ms = event.get("ms")
        elif kind == "ratelimit":
            record.ratelimit = {
                k: event.get(k) for k in ("allowed", "status", "limit", "subject", "tier", "retry_after")
            }
        elif kind == "guardrail":
            record.guardrails.append(
                {k: v for k, v in event.items() if k not in ("seq", "request_id", "kind")}
            )
        elif kind == "attempt":
            record.attempts += 1
            record.provider, record.model = event.get("provider"), event.get("model")
            if event.get("outcome") == "ok":
                tokens = int(event.get("input_tokens") or 0), int(event.get("output_tokens") or 0)
                record.input_tokens += tokens[0]
                record.output_tokens += tokens[1]
                self._tokens.append((time.monotonic(), sum(tokens)))
        elif kind == "retry":
            record.retries += 1
        elif kind == "failover":
            record.failovers.append({k: event.get(k) for k in ("source", "target", "phase", "reason")})
        self._changed(record)

    # ------------------------------------------------------------------ dev loop side

    def set_config(self, config: RuntimeConfig, notes: list[str]) -> None:
        """The serving generation's effective config (secret-looking values masked)."""
        self.config = redact_config(config.model_dump(mode="json", by_alias=True))
        self.notes = list(notes)
        # A new runtime process starts with every breaker closed.
        self.breakers = {provider.id: "closed" for provider in config.llm.chain}
        self.bus.publish("config", config=self.config, notes=self.notes)

    def reload(
        self,
        generation: int | None,
        *,
        ok: bool,
        took: float,
        since_edit: float | None,
        changed: list[str],
        error: str = "",
    ) -> None:
        """A generation was loaded (or failed to)."""
        if ok:
            self.generation = generation
        entry = {
            "at": time.time(),
            "generation": generation,
            "ok": ok,
            "took": round(took, 3),
            "since_edit": None if since_edit is None else round(since_edit, 3),
            "changed": changed,
            "error": error,
        }
        self.reloads.append(entry)
        self.bus.publish("reload", reload=entry)

    def tick(self) -> dict[str, Any]:
        """One metric point (every second): rates over the last second, percentiles over 30 s."""
        now = time.monotonic()
        window = [f for f in self._finished if now - f[0] <= LATENCY_WINDOW]
        last = [f for f in window if now - f[0] <= 1.0]
        latencies = sorted(f[1] for f in window)
        point = {
            "at": time.time(),
            "rps": len(last),
            "p50": _percentile(latencies, 0.50),
            "p95": _percentile(latencies, 0.95),
            "p99": _percentile(latencies, 0.99),
            "tokens": sum(n for at, n in self._tokens if now - at <= 1.0),
            "errors": sum(1 for f in last if f[2]),
            "breakers": dict(self.breakers),
        }
        self.history.append(point)
        self.bus.publish("metrics", point=point)
        return point

    def snapshot(self) -> dict[str, Any]:
        """Everything the page needs to draw itself before the live updates."""
        return {
            "requests": [r.summary() for r in self.requests.values()],
            "reloads": list(self.reloads),
            "config": self.config,
            "notes": self.notes,
            "metrics": list(self.history),
            "generation": self.generation,
        }

    def close(self) -> None:
        """The session ends: live streams finish."""
        self.closed = True
        self.bus.publish("closing")

    def _changed(self, record: Record) -> None:
        self.bus.publish("request", record.id, request=record.summary())


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(q * len(values)))]
