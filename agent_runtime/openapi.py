"""The OpenAPI 3.1 document of the runtime's routes, built from the route table itself.

Each :class:`~agent_runtime.pipeline.Route` already says its path, methods, whether it
authenticates and which pydantic model its body is; the refusals the pipeline can answer follow
from those (405, 400 without Host, 401/403, 415/413/422 for a body, 429/503 under limits). What
a route answers on success is described here, next to nothing else, in :data:`SUCCESS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from agent_runtime.pipeline import Route

OPENAPI_VERSION = "3.1.0"
_SCHEMA_REF = "#/components/schemas/{model}"

_JSON_OBJECT: dict[str, Any] = {"type": "object"}
_OPENAI_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
                "request_id": {"type": "string"},
            },
        }
    },
}
_PLAIN_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "code": {"type": ["string", "null"]}},
}
_SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "description": "One server-sent event.",
    "required": ["data"],
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}, "id": {"type": "string"}},
}
_SSE: dict[str, Any] = {
    "text/event-stream": {
        "schema": _SSE_EVENT,
        "x-events": "Sentient agent protocol events (text_chunk, json, error, done); see docs/runtime.md",
    }
}

# What each route answers on success: (status, description, content).
SUCCESS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "/assist": ("200", "The agent's answer as server-sent events, ending with `done`.", _SSE),
    "/v1/chat/completions": (
        "200",
        "A chat.completion, or chat.completion.chunk events with `stream: true`.",
        {"application/json": {"schema": _JSON_OBJECT}, "text/event-stream": {"schema": _SSE_EVENT}},
    ),
    "/v1/models": (
        "200",
        "The agent as the one model it serves.",
        {"application/json": {"schema": _JSON_OBJECT}},
    ),
    "/live": ("200", "The process serves requests.", {"application/json": {"schema": _JSON_OBJECT}}),
    "/ready": (
        "200",
        "Started, not draining, and a provider is usable (503 otherwise, same body).",
        {"application/json": {"schema": _JSON_OBJECT}},
    ),
    "/health": (
        "200",
        "The runtime's state (no upstream addresses).",
        {"application/json": {"schema": _JSON_OBJECT}},
    ),
    "/info": ("200", "The agent card.", {"application/json": {"schema": _JSON_OBJECT}}),
    "/metrics": (
        "200",
        "Prometheus exposition (on the metrics port, or here when server.metricsPort is 0).",
        {"text/plain": {"schema": {"type": "string"}}},
    ),
    "/openapi.json": ("200", "This document.", {"application/json": {"schema": _JSON_OBJECT}}),
}


def _error_content(route: Route) -> dict[str, Any]:
    name = getattr(route.errors, "__name__", "")
    if name == "sse_errors":
        return _SSE
    if name == "openai_errors":
        return {"application/json": {"schema": _OPENAI_ERROR}}
    return {"application/json": {"schema": _PLAIN_ERROR}}


# Refusals of the HTTP layer itself (http/limits.py), on every route, with an empty body.
_CONNECTION_REFUSALS = {
    "408": "The request line, headers or body did not arrive in time (server.limits).",
    "431": "Request line and headers larger than server.limits.maxHeaderBytes.",
}


def _refusals(route: Route) -> dict[str, str]:
    codes = {"400": "No Host header (HTTP/1.1), or more than one.", "405": "Method not allowed (see Allow)."}
    if route.authenticate:
        codes["401"] = "No acceptable credential."
        codes["403"] = "A genuine token issued for another audience."
        codes["503"] = "Not started, or shutting down."
    if route.tracked:
        codes["503"] = "Not started, or shutting down."
    if route.body is not None:
        codes["413"] = "Body larger than 1 MiB."
        codes["415"] = "The body is not JSON."
        codes["422"] = "The body does not match the schema."
    if route.prepare is not None:
        codes["429"] = "Rate limit exceeded (Retry-After and rate-limit headers)."
    if route.guarded is not None:
        codes["400"] = (
            "No Host header (HTTP/1.1) or more than one, or a guardrail blocked the request or the answer (code guardrail_blocked)."
        )
    return codes


def _body_schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=_SCHEMA_REF)
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": _SCHEMA_REF.format(model=model.__name__)}


def build_document(routes: Sequence[Route], *, title: str, version: str) -> dict[str, Any]:
    """The OpenAPI document of ``routes`` (deterministic: same routes, same document)."""
    components: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for route in sorted(routes, key=lambda r: r.path):
        status, description, content = SUCCESS[route.path]
        responses: dict[str, Any] = {status: {"description": description, "content": content}}
        error_content = _error_content(route)
        for code, why in sorted(_refusals(route).items()):
            responses.setdefault(code, {"description": why, "content": error_content})
        for code, why in _CONNECTION_REFUSALS.items():
            responses.setdefault(code, {"description": why})
        responses = dict(sorted(responses.items()))
        operation: dict[str, Any] = {"responses": responses}
        if route.authenticate:
            operation["security"] = [{"bearer": []}, {"apiKey": []}]
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _body_schema(route.body, components)}},
            }
        name = route.path.strip("/").replace("/", "_").replace(".", "_")
        paths[route.path] = {
            method.lower(): {"operationId": f"{method.lower()}_{name}", **operation}
            for method in route.methods
        }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key or a JWT."},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
