"""A real OpenTelemetry Collector for the tracing tests: OTLP/HTTP in, OTLP JSON lines to a file.

The binary is the project's minimal collector distribution (``e2e/otelcol-build``: the OTLP
receiver, the contrib file exporter and bearer-token auth), built once from the Go module proxy into the tool
cache by ``python -m e2e.tools ensure`` (``make setup``); :func:`collector_binary` builds it
when it is missing. Spans are read back from the exporter's file, as a backend would store them.
"""

from __future__ import annotations

import json
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e.tools import tool_path
from tests.support.net import free_port
from tests.support.procs import spawn, stop
from tests.support.waiting import wait_for


def collector_binary() -> str:
    """Path of ``otelcol-sentient`` (built and cached on first use)."""
    return str(tool_path("otelcol-sentient"))


CONFIG = """
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{port}{auth}
exporters:
  file:
    path: {path}
    flush_interval: 100ms
{extensions}service:{service_extensions}
  telemetry:
    logs:
      level: info
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file]
"""


@dataclass(frozen=True)
class Span:
    """One exported span, with its attributes as plain values."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    attributes: dict[str, Any]
    status_code: int
    events: list[dict[str, Any]]
    resource: dict[str, Any]


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _value(v: dict[str, Any]) -> Any:
    """An OTLP JSON ``AnyValue`` as a Python value (int64 comes as a string in OTLP JSON)."""
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "arrayValue" in v:
        return [_value(x) for x in v["arrayValue"].get("values", [])]
    return None


def _attrs(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {item["key"]: _value(item.get("value", {})) for item in items or []}


class Collector:
    """One collector process on 127.0.0.1 in its own temporary directory.

    With ``token`` the receiver refuses every export without ``authorization: Bearer <token>``.
    """

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.binary = collector_binary()
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._dir = Path(tempfile.mkdtemp(prefix="sentient-otelcol-"))
        self.output = self._dir / "spans.jsonl"
        self.log_path = self._dir / "collector.log"
        self._proc: Any = None

    def start(self) -> Collector:
        """Start it and wait until the receiver accepts connections."""
        config = self._dir / "config.yaml"
        auth = extensions = service_extensions = ""
        if self.token is not None:
            auth = "\n        auth:\n          authenticator: bearertokenauth"
            extensions = f"extensions:\n  bearertokenauth:\n    token: {self.token}\n"
            service_extensions = "\n  extensions: [bearertokenauth]"
        config.write_text(
            CONFIG.format(
                port=self.port,
                path=self.output,
                auth=auth,
                extensions=extensions,
                service_extensions=service_extensions,
            )
        )
        proc = self._proc = spawn([self.binary, "--config", str(config)], log_path=self.log_path)
        try:
            wait_for(lambda: proc.poll() is not None or _listening(self.port), "the collector", timeout=60)
            if proc.poll() is not None:
                raise RuntimeError(f"exited with {proc.returncode}")
        except (AssertionError, RuntimeError) as exc:
            self.stop()
            raise RuntimeError(f"the collector did not start: {self.log_path.read_text()[-2000:]}") from exc
        return self

    def stop(self) -> None:
        """Stop the process (the exporter's file stays readable)."""
        if self._proc is not None:
            stop(self._proc)
            self._proc = None

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def spans(self) -> list[Span]:
        """Every span the collector wrote so far."""
        if not self.output.exists():
            return []
        return list(_spans(self.output.read_text()))

    def trace(self, trace_id: str) -> list[Span]:
        """The spans of one trace."""
        return [s for s in self.spans() if s.trace_id == trace_id]


def _spans(text: str) -> Iterator[Span]:
    for line in text.splitlines():
        if not line.strip():
            continue
        for rs in json.loads(line).get("resourceSpans", []):
            resource = _attrs(rs.get("resource", {}).get("attributes"))
            for ss in rs.get("scopeSpans", []):
                for s in ss.get("spans", []):
                    yield Span(
                        trace_id=s["traceId"],
                        span_id=s["spanId"],
                        parent_span_id=s.get("parentSpanId", ""),
                        name=s["name"],
                        kind=int(s.get("kind", 0)),
                        attributes=_attrs(s.get("attributes")),
                        status_code=int(s.get("status", {}).get("code", 0)),
                        events=[
                            {"name": e["name"], **_attrs(e.get("attributes"))} for e in s.get("events", [])
                        ],
                        resource=resource,
                    )
