"""Cache keys: SHA-256 of the canonical JSON of everything that changes an answer.

Two digests are combined. The *config fingerprint* covers the agent as rendered (its info and
system prompt, the whole ``llm`` section: chain, providers, models, default sampling parameters):
any change of them moves every key, so an edited agent never serves an answer of its previous
form. The *request digest* covers what the caller sent as the chain sees it (messages after the
input guardrails, sampling parameters), the mode (streamed or whole) and the scope (empty when
entries are shared per agent, the principal otherwise).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from agent_runtime.config import RuntimeConfig
from agent_runtime.llm import ChatRequest

# Bumped when the key material or the entry format changes: old entries then simply miss.
KEY_VERSION = 1

# Lists in a fixed order (no key sorting) with one C encoder: the request digest runs per request.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode


def canonical_json(value: Any) -> bytes:
    """One byte string per JSON value: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def config_fingerprint(config: RuntimeConfig) -> str:
    """The hex SHA-256 of the parts of ``config`` an answer depends on."""
    material = {
        "v": KEY_VERSION,
        "agent": config.agent.to_wire(),
        "llm": config.llm.to_wire(),
    }
    return hashlib.sha256(canonical_json(material)).hexdigest()


def request_digest(fingerprint: str, request: ChatRequest, mode: str, scope: str) -> str:
    """The hex SHA-256 naming the answer to ``request`` under ``fingerprint``.

    The material is a JSON list in a fixed order: fingerprint, mode, scope, the sampling
    parameters, then every message as ``[role, content]``.
    """
    material = [
        fingerprint,
        mode,
        scope,
        request.max_tokens,
        request.temperature,
        request.top_p,
        request.stop,
        [[m.role, m.content] for m in request.messages],
    ]
    return hashlib.sha256(_encode(material).encode()).hexdigest()
