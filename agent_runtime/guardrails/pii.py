"""Personal data and secrets: e-mail, phone, payment card (Luhn), IBAN (mod-97), secret keys.

Each entity is a regular expression plus, where the format has one, a checksum that
throws out look-alikes (order numbers that are not card numbers, random upper-case
words that are not IBANs). Phone numbers have no checksum: only written phone shapes
count (an international ``+`` prefix, ``(555) 010-2030``, ``555-010-2030``, a trunk ``0``
followed by groups), not any run of digits, so dates, versions and ids pass.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from agent_runtime.config import GuardrailAction, PIICheck, PIIEntity
from agent_runtime.guardrails.base import Span, SpanCheck, allowed
from agent_runtime.guardrails.regex import compile_bounded

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}(?![\w-])"
)
_PHONE = re.compile(
    r"(?<![\w+/.-])(?:"
    r"\+[1-9]\d{0,2}(?:[ .-]?\(?\d{1,4}\)?){2,5}"  # +44 20 7946 0958, +1 (555) 010-2030
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}"  # (555) 010-2030
    r"|\d{3}[.-]\d{3}[.-]\d{4}"  # 555-010-2030
    r"|0\d{2,4}[ /-]\d{3,4}[ -]?\d{3,4}"  # 020 7946 0958, 030/1234 5678
    r")(?![\w.-]?\d)"
)
_CARD = re.compile(r"(?<![\w.-])[2-6]\d{3}(?:[ -]?\d){9,15}(?![\w-])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
_SECRET_KEYS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("aws", re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Z0-9])")),
    (
        "aws",
        re.compile(r"(?i)aws.{0,20}?secret.{0,20}?[=:\"' ]\s*[\"']?[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])"),
    ),
    (
        "github",
        re.compile(r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,244})"),
    ),
    ("openai", re.compile(r"(?<![A-Za-z0-9_-])sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,200}")),
    ("slack", re.compile(r"(?<![A-Za-z0-9])xox[abposr]-[A-Za-z0-9-]{10,250}")),
    (
        "private_key",
        re.compile(
            r"-----BEGIN [A-Z ]{0,24}PRIVATE KEY-----[A-Za-z0-9+/=\s:,-]{0,8192}?"
            r"(?:-----END [A-Z ]{0,24}PRIVATE KEY-----|$)"
        ),
    ),
)


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a card number (digits only)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """ISO 13616 mod-97 check of an IBAN (spaces removed)."""
    if not 15 <= len(iban) <= 34:
        return False
    moved = iban[4:] + iban[:4]
    number = "".join(str(int(c, 36)) for c in moved)
    return int(number) % 97 == 1


def _card_ok(match: str) -> bool:
    digits = re.sub(r"[ -]", "", match)
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def _phone_ok(match: str) -> bool:
    digits = sum(c.isdigit() for c in match)
    return 8 <= digits <= 15


def _iban_ok(match: str) -> bool:
    return iban_ok(match.replace(" ", ""))


Matcher = Callable[[str], Iterable[tuple[int, int]]]


def _regex(pattern: re.Pattern[str], valid: Callable[[str], bool] | None = None) -> Matcher:
    def matches(text: str) -> Iterable[tuple[int, int]]:
        for m in pattern.finditer(text):
            if valid is None or valid(m.group()):
                yield m.start(), m.end()

    return matches


def _secret_keys(text: str) -> Iterable[tuple[int, int]]:
    for _, pattern in _SECRET_KEYS:
        for m in pattern.finditer(text):
            yield m.start(), m.end()


_DIGITS = re.compile(r"\d{3}").search
_SECRET_HINT = re.compile(
    r"AKIA|ASIA|ABIA|ACCA|gh[pousr]_|github_pat_|sk-|xox[abposr]-|-----BEGIN|(?i:secret)"
).search

# Cheap tests (one C-level scan each) that rule an entity out before its expressions run.
_PREFILTERS: dict[str, Callable[[str], object]] = {
    "email": lambda t: "@" in t,
    "phone": _DIGITS,
    "paymentCard": _DIGITS,
    "iban": re.compile(r"[A-Z]{2}\d{2}").search,
    "secretKey": _SECRET_HINT,
}

MATCHERS: dict[str, Matcher] = {
    "email": _regex(_EMAIL),
    "phone": _regex(_PHONE, _phone_ok),
    "paymentCard": _regex(_CARD, _card_ok),
    "iban": _regex(_IBAN, _iban_ok),
    "secretKey": _secret_keys,
}


def find_entities(text: str, entities: Iterable[PIIEntity], index: int = 0) -> list[Span]:
    """Every match of ``entities`` in ``text``."""
    spans: list[Span] = []
    for entity in entities:
        prefilter = _PREFILTERS.get(entity)
        if prefilter is not None and not prefilter(text):
            continue
        spans.extend(Span(index, start, end, entity) for start, end in MATCHERS[entity](text))
    return _longest_first(spans) if len(spans) > 1 else spans


def _longest_first(spans: list[Span]) -> list[Span]:
    """One kind per stretch of text: a phone-shaped run inside an IBAN is part of the IBAN."""
    kept: list[Span] = []
    for span in sorted(spans, key=lambda s: s.start - s.end):
        if all(span.end <= k.start or span.start >= k.end for k in kept):
            kept.append(span)
    return sorted(kept, key=lambda s: s.start)


class PIIDetector(SpanCheck):
    """Fires on personal data or secrets; a redaction masks each with its kind."""

    kind = "pii"

    def __init__(self, name: str, action: GuardrailAction, config: PIICheck) -> None:
        super().__init__(name, action)
        self.entities: tuple[PIIEntity, ...] = tuple(dict.fromkeys(config.entities))
        self.allow = [compile_bounded(p) for p in config.allow]

    def find(self, text: str, index: int = 0) -> list[Span]:
        """Matches of the configured entities that no allow pattern covers."""
        return allowed(find_entities(text, self.entities, index), self.allow, text)
