"""``/ws``: the Sentient protocol (or OpenAI chat-completion chunks) over a WebSocket.

One connection is one request, served by the same pipeline as ``POST /assist`` and
``POST /v1/chat/completions`` (authentication, strict body, rate-limit admission, audit,
metrics under the route label ``/ws``, drain):

- credentials in the handshake headers (``X-API-Key`` or ``Authorization: Bearer``), as on
  the HTTP routes; a refused handshake is an HTTP answer (401, 403, 503) with the same body;
- the subprotocol selects the protocol: ``sentient.v1`` (the default, also with no
  subprotocol) takes an ``/assist`` body, ``openai.v1`` a chat-completions body;
- the first message is the body; each event (or chunk) is one JSON text frame, the
  Sentient stream ends with ``done``, then the server closes (codes in
  ``agent_runtime.http.websocket.close_code``; 1001 when the agent is shutting down).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from agent_runtime.config import duration_seconds
from agent_runtime.http import Receive, Scope, Send
from agent_runtime.http.websocket import WebSocketBridge, http_scope
from agent_runtime.pipeline import Pipeline, Route
from agent_runtime.routes import assist, openai

PATH = "/ws"
SENTIENT = "sentient.v1"
OPENAI = "openai.v1"

# The HTTP routes this one reuses, under their own label: metrics and audit say ``/ws``.
WS_ASSIST = dataclasses.replace(assist.ASSIST, path=PATH)
WS_CHAT = dataclasses.replace(openai.CHAT_COMPLETIONS, path=PATH)
_ROUTES: dict[str, Route] = {SENTIENT: WS_ASSIST, OPENAI: WS_CHAT}


def choose(offered: list[str]) -> tuple[Route, str | None]:
    """The route of the first known subprotocol the client offered (Sentient when none)."""
    for name in offered:
        route = _ROUTES.get(name)
        if route is not None:
            return route, name
    return WS_ASSIST, None


def describe() -> dict[str, Any]:
    """``/ws`` for the OpenAPI document's ``x-websockets`` extension (body schemas: components)."""
    mirrors = {
        SENTIENT: (assist.ASSIST.path, "AssistBody"),
        OPENAI: (openai.CHAT_COMPLETIONS.path, "ChatCompletionBody"),
    }
    return {
        PATH: {
            "description": (
                "One request per connection: credentials in the handshake headers (as on the HTTP "
                "routes; a refused handshake is answered 401, 403 or 503), the first message is the "
                "body, then one JSON text frame per event (Sentient, ending with `done`) or per "
                "chat.completion.chunk (then `[DONE]`), then the server closes: 1000 done, 1001 "
                "shutting down, 1008 invalid body (not JSON, or not the schema) or refused, 1009 body too large, "
                "1011 internal error, 1013 rate-limited. See docs/runtime.md."
            ),
            "security": [{"bearer": []}, {"apiKey": []}],
            "subprotocols": {
                name: {"sameAs": path, "firstMessage": {"$ref": f"#/components/schemas/{body}"}}
                for name, (path, body) in mirrors.items()
            },
            "defaultSubprotocol": SENTIENT,
        }
    }


async def serve(pipeline: Pipeline, scope: Scope, receive: Receive, send: Send) -> None:
    """One ``/ws`` connection through ``pipeline``."""
    route, subprotocol = choose(list(scope.get("subprotocols") or []))
    runtime = pipeline.runtime
    limits = runtime.config.server.limits
    bridge = WebSocketBridge(
        receive, send, subprotocol, lambda: not runtime.accepting, duration_seconds(limits.body_timeout)
    )
    if not await bridge.handshake(scope):
        return
    try:
        await pipeline.serve(route, http_scope(scope), bridge.receive, bridge.send)
    finally:
        await bridge.close()
