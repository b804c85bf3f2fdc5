"""``GET /openapi.json``: the OpenAPI document of every route the runtime serves.

The same document is shipped as ``schemas/runtime-openapi.json``; regenerate it with
``python -m agent_runtime.routes.spec > schemas/runtime-openapi.json`` (a test compares them).
"""

from __future__ import annotations

import json
import sys
from functools import cache
from typing import Any

from agent_runtime import protocol
from agent_runtime.openapi import build_document
from agent_runtime.pipeline import Call, Route
from agent_runtime.routes import assist, health, openai, ws


async def run_openapi(call: Call) -> None:
    """The document (built once per process: the route table never changes)."""
    await call.ex.raw(200, "application/json", _document_bytes())


OPENAPI = Route(path="/openapi.json", methods=("GET", "HEAD"), errors=health.json_errors, run=run_openapi)

# Every route of the API port; /metrics is served here only when server.metricsPort is 0.
ROUTES: tuple[Route, ...] = (
    assist.ASSIST,
    openai.CHAT_COMPLETIONS,
    openai.MODELS,
    health.LIVE,
    health.READY,
    health.HEALTH,
    health.INFO,
    health.METRICS,
    OPENAPI,
)


def document() -> dict[str, Any]:
    """The runtime's OpenAPI document (OpenAPI has no WebSocket operation: ``/ws`` is an extension)."""
    doc = build_document(
        ROUTES, title="Sentient agent runtime", version=f"protocol {protocol.SCHEMA_VERSION}"
    )
    doc["x-websockets"] = ws.describe()
    return doc


def render() -> str:
    """The document as shipped under ``schemas/`` (indented, sorted keys, final newline)."""
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


@cache
def _document_bytes() -> bytes:
    return render().encode()


if __name__ == "__main__":
    sys.stdout.write(render())
