"""The small interface every check implements, and what checks report.

A check looks at a list of texts (the caller's messages, or the answer) and reports a
:class:`Finding` when it fires: the kinds of what it found (``email``, ``override``...),
a score when it has one, and where in which text (:class:`Span`) when it can say so
(pattern and PII checks: only those can redact, and only those run on a stream window).
A finding never carries the matched text: it goes to metrics and the audit log.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from agent_runtime.config import GuardrailAction


@dataclass(frozen=True, slots=True)
class Span:
    """Where a match is: text ``index``, ``start``..``end`` characters, and its kind."""

    index: int
    start: int
    end: int
    label: str


@dataclass(frozen=True, slots=True)
class Finding:
    """What a check found (kinds and score; never the matched text)."""

    labels: tuple[str, ...]
    score: float | None = None
    spans: tuple[Span, ...] = ()


class Check(ABC):
    """One configured check: its name (metrics label), kind and action."""

    kind: ClassVar[str]
    # Reports spans: it can redact, and it can run on a window of a streamed answer.
    spanned: ClassVar[bool] = False
    # Calls a remote service (awaited, with a timeout); the others are pure CPU.
    remote: ClassVar[bool] = False

    def __init__(self, name: str, action: GuardrailAction) -> None:
        self.name = name
        self.action = action

    @abstractmethod
    def scan(self, texts: Sequence[str]) -> Finding | None:
        """The finding over ``texts``, or None when the check passes."""

    async def ascan(self, texts: Sequence[str]) -> Finding | None:
        """:meth:`scan`, awaited (remote checks override it)."""
        return self.scan(texts)


class SpanCheck(Check):
    """A check made of matches in one text at a time (patterns, PII)."""

    spanned = True

    @abstractmethod
    def find(self, text: str, index: int = 0) -> list[Span]:
        """The matches in ``text``."""

    def scan(self, texts: Sequence[str]) -> Finding | None:
        """Every match of every text."""
        spans = [span for index, text in enumerate(texts) for span in self.find(text, index)]
        if not spans:
            return None
        return Finding(tuple(sorted({s.label for s in spans})), spans=tuple(spans))


def redact(text: str, spans: Sequence[Span]) -> str:
    """``text`` with each span replaced by ``[REDACTED:kind]`` (overlaps merged)."""
    if not spans:
        return text
    out: list[str] = []
    position = 0
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        if span.end <= position:
            continue
        start = max(span.start, position)
        out.append(text[position:start])
        out.append(f"[REDACTED:{span.label}]")
        position = span.end
    out.append(text[position:])
    return "".join(out)


def allowed(spans: list[Span], allow: Sequence[object], text: str) -> list[Span]:
    """The spans not covered by a match of an ``allow`` pattern (compiled ``re.Pattern``)."""
    if not allow or not spans:
        return spans
    covers = [(m.start(), m.end()) for pattern in allow for m in pattern.finditer(text)]  # type: ignore[attr-defined]
    return [s for s in spans if not any(a <= s.start and s.end <= b for a, b in covers)]
