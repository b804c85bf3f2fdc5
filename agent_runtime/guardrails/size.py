"""Size and structure limits: characters, messages, lines, longest line."""

from __future__ import annotations

from collections.abc import Sequence

from agent_runtime.config import GuardrailAction, SizeCheck
from agent_runtime.guardrails.base import Check, Finding


class SizeLimits(Check):
    """Fires when the texts are larger than the configured bounds."""

    kind = "size"

    def __init__(self, name: str, action: GuardrailAction, config: SizeCheck) -> None:
        super().__init__(name, action)
        self.max_chars = config.max_chars
        self.max_messages = config.max_messages
        self.max_lines = config.max_lines
        self.max_line_chars = config.max_line_chars

    def scan(self, texts: Sequence[str]) -> Finding | None:
        """The limits exceeded, by name."""
        exceeded: list[str] = []
        if self.max_messages is not None and len(texts) > self.max_messages:
            exceeded.append("messages")
        if self.max_chars is not None and sum(len(t) for t in texts) > self.max_chars:
            exceeded.append("chars")
        if self.max_lines is not None and sum(t.count("\n") + 1 for t in texts) > self.max_lines:
            exceeded.append("lines")
        if self.max_line_chars is not None and any(
            len(line) > self.max_line_chars
            for t in texts
            if len(t) > self.max_line_chars
            for line in t.splitlines()
        ):
            exceeded.append("line_chars")
        return Finding(tuple(exceeded)) if exceeded else None

    def exceeded_stream(self, chars: int, lines: int) -> tuple[str, ...]:
        """The limits a streamed answer of ``chars`` characters and ``lines`` lines is over."""
        exceeded: list[str] = []
        if self.max_chars is not None and chars > self.max_chars:
            exceeded.append("chars")
        if self.max_lines is not None and lines > self.max_lines:
            exceeded.append("lines")
        return tuple(exceeded)
