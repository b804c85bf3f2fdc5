"""Output checks on a streamed answer.

What a client receives of a streamed answer is what the checks have already seen:

- pattern and PII checks run on a sliding window: the last ``streamWindow`` characters
  (128 by default) are withheld until the text that follows them has arrived (text leaves
  in steps of a quarter window, which bounds the scanning cost), so that a
  match split across chunks is found before any part of it leaves. A match that reaches
  into the withheld window keeps everything from its start withheld until it ends (at most
  :data:`MAX_PENDING` characters). A redaction masks the match in the text sent; a block
  ends the stream: nothing more of the answer is sent, the stream closes with an error
  (``/assist``: an ``error`` event then ``done``; OpenAI: an error record then ``[DONE]``).
  What was sent before the block stays sent.
- size checks count characters and lines as they arrive; going over blocks at once.
- whole-text checks (injection, moderation) run once the answer has ended, before the
  withheld tail is sent: a block then withholds the tail and ends the stream with an error.

A stream-level verdict is counted and audited once per check per stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent_runtime.guardrails.base import Check, Span, SpanCheck, redact
from agent_runtime.guardrails.engine import BLOCKED_CODE, Context, Guardrails, Screening, Verdict
from agent_runtime.guardrails.size import SizeLimits
from agent_runtime.sdk import AgentError

# Longest text withheld while a match is still open; beyond it the text goes out as it is
# (redacted up to there), so a pattern that never ends cannot stall the answer.
MAX_PENDING = 16384


@dataclass(slots=True)
class StreamGuard:
    """The output checks of one streamed text; feed it deltas, send what it releases."""

    guardrails: Guardrails
    context: Context
    buffer: str = ""
    chars: int = 0
    lines: int = 1
    blocked: Verdict | None = None
    _reported: set[str] = field(default_factory=set)
    _parts: list[str] = field(default_factory=list)
    _spanned: list[SpanCheck] = field(default_factory=list)
    _sizes: list[SizeLimits] = field(default_factory=list)
    _whole: list[Check] = field(default_factory=list)

    def __post_init__(self) -> None:
        for check in self.guardrails.output:
            if isinstance(check, SpanCheck):
                self._spanned.append(check)
            elif isinstance(check, SizeLimits):
                self._sizes.append(check)
            else:
                self._whole.append(check)

    def feed(self, delta: str) -> str:
        """The text that may be sent now ('' when blocked or still withheld)."""
        if self.blocked is not None or not delta:
            return ""
        if self._whole:
            self._parts.append(delta)
        self.chars += len(delta)
        self.lines += delta.count("\n")
        if self._sizes and self._size_exceeded():
            return ""
        self.buffer += delta
        return self._release(final=False)

    async def finish(self) -> str:
        """The withheld tail, once the whole-text checks have passed ('' when blocked)."""
        if self.blocked is not None:
            return ""
        if self._whole:
            screening = Screening(["".join(self._parts)])
            for check in self._whole:
                screening = await self._screen_whole(check, screening)
                if self.blocked is not None:
                    return ""
        tail = self._release(final=True)
        if self.blocked is None:
            for check in (*self._spanned, *self._sizes):
                if check.name not in self._reported:
                    self.guardrails.count_pass(check, "output")
        return tail

    async def _screen_whole(self, check: Check, screening: Screening) -> Screening:
        # One check at a time through the engine: same counting, audit and unavailability rules.
        sub = await self.guardrails.screen("output", screening.texts, self.context, checks=[check])
        if sub.blocked is not None:
            self.blocked = sub.blocked
        return sub

    def _size_exceeded(self) -> bool:
        for check in self._sizes:
            exceeded = check.exceeded_stream(self.chars, self.lines)
            if exceeded and check.name not in self._reported:
                self._reported.add(check.name)
                self._verdict(check, exceeded)
                if check.action == "block":
                    return True
        return False

    def _verdict(self, check: Check, labels: tuple[str, ...]) -> None:
        verdict = Verdict(check.name, check.kind, "output", check.action, labels)
        self.guardrails.report(verdict, self.context)
        if check.action == "block":
            self.blocked = verdict
            self.buffer = ""

    def _release(self, final: bool) -> str:
        buffer = self.buffer
        window = self.guardrails.stream_window
        # Text leaves in steps of a quarter window: each scan then covers what it releases
        # about five times over, where scanning at every token would cover it window/token times.
        if not final and len(buffer) < window + max(1, window // 4):
            return ""
        cut = len(buffer) if final else len(buffer) - window
        if cut <= 0:
            return ""
        found = [(check, check.find(buffer)) for check in self._spanned]
        if not final and len(buffer) <= MAX_PENDING:
            # A match that crosses the cut keeps everything from its start withheld.
            moved = True
            while moved:
                moved = False
                for _, spans in found:
                    for span in spans:
                        if span.start < cut < span.end:
                            cut, moved = span.start, True
        masks: list[Span] = []
        for check, spans in found:
            decided = [s for s in spans if s.start < cut]
            if not decided:
                continue
            if check.name not in self._reported:
                self._reported.add(check.name)
                self._verdict(check, tuple(sorted({s.label for s in decided})))
                if self.blocked is not None:
                    return ""
            if check.action == "redact":
                masks.extend(Span(0, s.start, min(s.end, cut), s.label) for s in decided)
        self.buffer = buffer[cut:]
        return redact(buffer[:cut], masks)


class OutputBlocked(AgentError):
    """An output check blocked the answer: the runtime ends the response with an error."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(
            "the answer was blocked by a guardrail",
            400,
            {"code": BLOCKED_CODE, "check": verdict.check, "stage": verdict.stage},
        )
        self.verdict = verdict


class GuardedResponse:
    """The output checks of one ``/assist`` response (an :class:`~agent_runtime.sdk.OutputFilter`).

    Each text stream gets its own window; a text block is checked whole. The first block
    raises :class:`OutputBlocked` once; what the response sends after that (closing chunks,
    the error event) passes untouched.
    """

    def __init__(self, guardrails: Guardrails, context: Context) -> None:
        self.guardrails = guardrails
        self.context = context
        self._streams: dict[str, StreamGuard] = {}
        self._blocked = False
        # The verdict that blocked the response, once one did.
        self.blocked: Verdict | None = None

    def _raise(self, verdict: Verdict) -> None:
        self._blocked = True
        self.blocked = verdict
        raise OutputBlocked(verdict)

    def blocked_error(self) -> AgentError | None:
        """The error of the block, once one happened."""
        return OutputBlocked(self.blocked) if self.blocked is not None else None

    def text(self, stream_id: str, content: str) -> str:
        """What may be sent of a stream now."""
        if self._blocked:
            return ""
        guard = self._streams.get(stream_id)
        if guard is None:
            guard = self._streams[stream_id] = StreamGuard(self.guardrails, self.context)
        released = guard.feed(content)
        if guard.blocked is not None:
            self._raise(guard.blocked)
        return released

    async def end(self, stream_id: str) -> str:
        """The withheld tail of a stream that closes."""
        guard = self._streams.pop(stream_id, None)
        if guard is None or self._blocked:
            return ""
        tail = await guard.finish()
        if guard.blocked is not None:
            self._raise(guard.blocked)
        return tail

    async def block(self, content: str) -> str:
        """A whole text block, checked and redacted."""
        if self._blocked:
            return content
        screening = await self.guardrails.screen("output", [content], self.context)
        if screening.blocked is not None:
            self._raise(screening.blocked)
        return screening.texts[0]
