"""One cached answer: the chain's events in order, encoded as compact JSON.

A whole answer and a stream are both kept as the event sequence the failover loop produced
(text pieces, usage, the closing ``Completed``), so a replayed stream sends the same pieces in
the same order and the routes turn them into the same Sentient events or OpenAI chunks.
Provider switches are left out: a replay did not fail over.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from agent_runtime.cache.keys import KEY_VERSION
from agent_runtime.llm import Completed, Completion, LLMEvent, TextDelta, Usage

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode


class EntryError(ValueError):
    """Bytes that are not an entry of this version (another runtime's, or damaged): a miss."""


@dataclass(frozen=True, slots=True)
class Entry:
    """The answer's pieces, usage and end."""

    pieces: tuple[str, ...]
    # (input, output) tokens as the provider reported them; None when it reported none.
    usage: tuple[int, int] | None
    provider: str
    model: str
    finish_reason: str | None

    @property
    def tokens(self) -> int:
        """Upstream tokens the answer cost when it was made (saved by each hit)."""
        return sum(self.usage) if self.usage is not None else 0

    @classmethod
    def from_completion(cls, completion: Completion) -> Entry:
        """The entry of a whole answer."""
        return cls(
            (completion.text,),
            (completion.input_tokens, completion.output_tokens),
            completion.provider,
            completion.model,
            completion.finish_reason,
        )

    def completion(self) -> Completion:
        """The whole answer."""
        tokens_in, tokens_out = self.usage or (0, 0)
        return Completion(
            text="".join(self.pieces),
            provider=self.provider,
            model=self.model,
            finish_reason=self.finish_reason,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
        )

    def events(self) -> list[LLMEvent]:
        """The stream's events, as the failover loop yielded them."""
        events: list[LLMEvent] = [TextDelta(piece) for piece in self.pieces]
        if self.usage is not None:
            events.append(Usage(*self.usage))
        events.append(Completed(self.provider, self.model, self.finish_reason))
        return events

    def encode(self) -> bytes:
        """Compact JSON (a list, not an object: the field names would be stored with every entry)."""
        usage = list(self.usage) if self.usage is not None else None
        row = [KEY_VERSION, list(self.pieces), usage, self.provider, self.model, self.finish_reason]
        return _encode(row).encode()

    @classmethod
    def decode(cls, data: bytes) -> Entry:
        """The entry ``encode`` wrote; :class:`EntryError` for anything else."""
        try:
            version, pieces, usage, provider, model, finish = json.loads(data)
        except (ValueError, TypeError) as exc:
            raise EntryError("not a cache entry") from exc
        valid = (
            version == KEY_VERSION
            and isinstance(pieces, list)
            and all(isinstance(p, str) for p in pieces)
            and (usage is None or (isinstance(usage, list) and len(usage) == 2))
            and all(isinstance(n, int) for n in usage or ())
            and isinstance(provider, str)
            and isinstance(model, str)
            and (finish is None or isinstance(finish, str))
        )
        if not valid:
            raise EntryError("not a cache entry of this version")
        return cls(
            tuple(pieces), (usage[0], usage[1]) if usage is not None else None, provider, model, finish
        )


class StreamRecording:
    """Collects a stream's events as they pass; an entry only once ``Completed`` arrived."""

    __slots__ = ("_completed", "_pieces", "_usage")

    def __init__(self) -> None:
        self._pieces: list[str] = []
        self._usage: Usage | None = None
        self._completed: Completed | None = None

    def add(self, event: LLMEvent) -> None:
        """Record one event."""
        kind = type(event)
        if kind is TextDelta:
            self._pieces.append(event.text)  # type: ignore[union-attr]
        elif kind is Usage:
            self._usage = event  # type: ignore[assignment]
        elif kind is Completed:
            self._completed = event  # type: ignore[assignment]

    def entry(self) -> Entry | None:
        """The entry of a complete stream; None for one that never completed."""
        done = self._completed
        if done is None:
            return None
        usage = self._usage
        tokens = (usage.input_tokens, usage.output_tokens) if usage is not None else None
        return Entry(tuple(self._pieces), tokens, done.provider, done.model, done.finish_reason)
