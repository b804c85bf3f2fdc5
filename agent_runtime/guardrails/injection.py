"""Prompt-injection heuristics, combined into one score between 0 and 1.

Signals (each with a weight, combined as independent evidence: 1 - prod(1 - w)):

- ``override``: an instruction to ignore, forget or replace earlier instructions;
- ``exfiltration``: a request to reveal the system prompt or hidden instructions;
- ``roleplay``: a role-play escape (``you are now DAN``, ``developer mode``, ``no restrictions``);
- ``role_marker``: chat-template or role markers inside user text (``<|im_start|>``, ``[INST]``,
  ``### system:``) that try to open a new turn;
- ``hidden_text``: zero-width, bidirectional-override or Unicode tag characters (invisible to a
  reader, read by the model); the zero-width joiner of emoji sequences is not counted;
- ``encoded``: a base64 or hex run that decodes to text carrying one of the signals above.
  Encoded runs that decode to binary (images, keys, compressed data in code) count nothing.

The weights are set so that one strong signal (override, role-play escape, an encoded
instruction) reaches the default threshold 0.5 and one weak signal (a role marker) does not.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence

from agent_runtime.config import GuardrailAction, InjectionCheck
from agent_runtime.guardrails.base import Check, Finding

_OVERRIDE = re.compile(
    r"\b(?:ignore|disregard|forget|override|bypass|skip|drop)\b[^.\n]{0,40}?"
    r"\b(?:previous|prior|preceding|above|earlier|all|any|the|your|system|original|initial)\b[^.\n]{0,30}?"
    r"\b(?:instructions?|prompts?|rules|guidelines|directives|guardrails|restrictions|constraints|polic(?:y|ies))\b"
    r"|\bnew (?:system )?instructions?\s*:"
    r"|\b(?:from now on|henceforth),? (?:you|ignore|respond)\b[^.\n]{0,60}?\b(?:instead|only|without|ignore)\b",
    re.IGNORECASE,
)
_EXFILTRATE = re.compile(
    r"\b(?:reveal|print|show|repeat|output|leak|display|tell me|give me|dump|write out)\b[^.\n]{0,40}?"
    r"\b(?:system prompt|system message|hidden (?:instructions?|prompt)|initial (?:instructions?|prompt)"
    r"|(?:your|the) (?:instructions|prompt|rules) (?:above|verbatim|word for word))",
    re.IGNORECASE,
)
_ROLEPLAY = re.compile(
    r"\b(?:you are now|you're now|act as|pretend (?:to be|you are|you're)|roleplay as|role-play as"
    r"|from now on you are|simulate|become)\b[^.\n]{0,60}?"
    r"\b(?:DAN|do anything now|unfiltered|uncensored|unrestricted|jailbr[o]?ken|evil|without (?:any )?"
    r"(?:restrictions|rules|limits|filters|guidelines|ethics)|no (?:restrictions|rules|limits|filters|guidelines))\b"
    r"|\b(?:developer|god|sudo|jailbreak) mode\b"
    r"|\bjailbreak(?:ing)? (?:the|this|you)\b",
    re.IGNORECASE,
)
_ROLE_MARKER = re.compile(
    r"<\|im_(?:start|end)\|>|<\|(?:system|assistant|user|endoftext)\|>|\[/?INST\]|<</?SYS>>"
    r"|^\s*#{2,}\s*(?:system|instruction)s?\s*:?\s*$|^\s*(?:system|assistant)\s*:\s*\S",
    re.IGNORECASE | re.MULTILINE,
)
# Zero-width (not U+200D, the emoji joiner), bidi embeddings/overrides/isolates, BOM in text, tag characters.
_HIDDEN = re.compile(
    "[\u200b\u200c\u200e\u200f\u2060-\u2064\u202a-\u202e\u2066-\u2069\ufeff\U000e0000-\U000e007f]"
)
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{24,4096}={0,2}(?![A-Za-z0-9+/=])")
_HEX = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}){16,2048}(?![0-9A-Fa-f])")

WEIGHTS: dict[str, float] = {
    "override": 0.6,
    "exfiltration": 0.5,
    "roleplay": 0.55,
    "role_marker": 0.3,
    "hidden_text": 0.5,
    "encoded": 0.7,
}
# Bounds on the work spent decoding: runs looked at per text.
_MAX_DECODED_RUNS = 8


def _printable(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    printable = sum(c.isprintable() or c in "\n\r\t" for c in text)
    return text if text and printable / len(text) > 0.95 else None


def _decoded_runs(text: str) -> list[str]:
    decoded: list[str] = []
    for pattern, decode in ((_BASE64, _b64), (_HEX, bytes.fromhex)):
        for m in pattern.finditer(text):
            if len(decoded) >= _MAX_DECODED_RUNS:
                return decoded
            try:
                raw = decode(m.group())
            except (ValueError, binascii.Error):
                continue
            plain = _printable(raw)
            if plain is not None:
                decoded.append(plain)
    return decoded


def _b64(run: str) -> bytes:
    padded = run + "=" * (-len(run) % 4)
    return base64.b64decode(padded, validate=True)


# Every word one of the three phrase expressions above must start with, in one expression:
# most texts have none, and one scan then replaces three.
_ANCHORS = re.compile(
    r"ignore|disregard|forget|override|bypass|skip|drop|instruction|from now on|henceforth"
    r"|reveal|print|show|repeat|output|leak|display|tell me|give me|dump|write out"
    r"|you are|you're|act as|pretend|role-?play|simulate|become|mode|jailbr",
    re.IGNORECASE,
)


def _plain_signals(text: str) -> set[str]:
    found: set[str] = set()
    if _ANCHORS.search(text):
        if _OVERRIDE.search(text):
            found.add("override")
        if _EXFILTRATE.search(text):
            found.add("exfiltration")
        if _ROLEPLAY.search(text):
            found.add("roleplay")
    if _ROLE_MARKER.search(text):
        found.add("role_marker")
    return found


def signals(text: str) -> set[str]:
    """The signals present in ``text``."""
    found = _plain_signals(text)
    if _HIDDEN.search(text):
        found.add("hidden_text")
        # What the hidden characters split up, read as the model reads it.
        found |= _plain_signals(_HIDDEN.sub("", text))
    if len(text) >= 24 and any(_plain_signals(run) - {"role_marker"} for run in _decoded_runs(text)):
        found.add("encoded")
    return found


def score(found: set[str]) -> float:
    """Independent evidence combined: 1 - prod(1 - weight)."""
    rest = 1.0
    for name in found:
        rest *= 1.0 - WEIGHTS[name]
    return round(1.0 - rest, 4)


class InjectionHeuristics(Check):
    """Fires when the score of the signals in the texts reaches the threshold."""

    kind = "injection"

    def __init__(self, name: str, action: GuardrailAction, config: InjectionCheck) -> None:
        super().__init__(name, action)
        self.threshold = config.threshold

    def scan(self, texts: Sequence[str]) -> Finding | None:
        """Signals of every text together, scored once."""
        found: set[str] = set()
        for text in texts:
            found |= signals(text)
        if not found:
            return None
        value = score(found)
        if value < self.threshold:
            return None
        return Finding(tuple(sorted(found)), score=value)
