"""Deny patterns (regular expressions with a bounded cost), with allow patterns as exceptions."""

from __future__ import annotations

from agent_runtime.config import GuardrailAction, PatternCheck
from agent_runtime.guardrails.base import Span, SpanCheck, allowed
from agent_runtime.guardrails.regex import compile_bounded


class DenyPatterns(SpanCheck):
    """Fires on a deny match that no allow match covers; a redaction masks the match."""

    kind = "patterns"

    def __init__(self, name: str, action: GuardrailAction, config: PatternCheck) -> None:
        super().__init__(name, action)
        self.deny = [compile_bounded(p) for p in config.deny]
        self.allow = [compile_bounded(p) for p in config.allow]

    def find(self, text: str, index: int = 0) -> list[Span]:
        """Deny matches not covered by an allow match (empty matches ignored)."""
        spans = [
            Span(index, m.start(), m.end(), "deny")
            for pattern in self.deny
            for m in pattern.finditer(text)
            if m.end() > m.start()
        ]
        return allowed(spans, self.allow, text)
