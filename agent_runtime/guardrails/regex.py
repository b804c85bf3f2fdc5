"""Regular expressions with a compile-time bound on their cost.

Python's ``re`` backtracks: a pattern such as ``(a+)+$`` takes exponential time on a
crafted input, and these patterns run on caller-controlled text in every request. A
pattern from the configuration is accepted only when its parse tree shows none of the
shapes that backtrack without bound:

- a variable repeat (``*``, ``+``, ``?``, ``{m,n}``) inside a repeat without an upper bound;
- back-references (``\\1``, ``(?P=name)``) and conditionals;
- a pattern longer than :data:`MAX_PATTERN_CHARS`.

Text scanned is itself bounded by the caller (the size check and the stream window), so
a bounded pattern runs in time linear (at worst polynomial of low degree) in that text.
"""

from __future__ import annotations

import re

# The parser of ``re`` itself (Python 3.11+): the tree it builds is what the matcher runs.
from re import _constants as sre_constants  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

MAX_PATTERN_CHARS = 512

_REPEATS = {
    sre_constants.MAX_REPEAT,
    sre_constants.MIN_REPEAT,
    getattr(sre_constants, "POSSESSIVE_REPEAT", None),
}
_FORBIDDEN = {sre_constants.GROUPREF, sre_constants.GROUPREF_EXISTS}


class PatternError(ValueError):
    """A pattern that does not compile or whose cost is not bounded."""


def _walk(items: Any, inside_unbounded: bool) -> None:
    for op, arg in items:
        if op in _FORBIDDEN:
            raise PatternError("back-references and conditionals are not allowed")
        if op in _REPEATS and op is not None:
            low, high, body = arg
            if inside_unbounded and low != high:
                raise PatternError(
                    "a variable repeat inside a repeat without upper bound can backtrack without end"
                )
            _walk(body, inside_unbounded or high == sre_constants.MAXREPEAT)
        elif op == sre_constants.SUBPATTERN:
            _walk(arg[-1], inside_unbounded)
        elif op == sre_constants.BRANCH:
            for branch in arg[1]:
                _walk(branch, inside_unbounded)
        elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            _walk(arg[1], inside_unbounded)
        elif op == getattr(sre_constants, "ATOMIC_GROUP", None):
            _walk(arg, inside_unbounded)


def check_bounded(pattern: str) -> None:
    """Raise :class:`PatternError` unless ``pattern`` compiles and its cost is bounded."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise PatternError(f"longer than {MAX_PATTERN_CHARS} characters")
    try:
        tree = sre_parse.parse(pattern)
    except re.error as exc:
        raise PatternError(f"does not compile: {exc}") from None
    _walk(tree, False)


def compile_bounded(pattern: str, flags: int = 0) -> re.Pattern[str]:
    """The compiled pattern, once :func:`check_bounded` accepts it."""
    check_bounded(pattern)
    try:
        return re.compile(pattern, flags)
    except re.error as exc:  # pragma: no cover - parse succeeded above
        raise PatternError(f"does not compile: {exc}") from None
