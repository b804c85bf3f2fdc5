"""The fake upstream's ``POST /v1/moderations``: OpenAI's moderation answer, decided by word lists.

An input is flagged in a category when it contains one of the category's trigger words
(whole words, any case); its score in that category is 0.9, else 0.01. Deterministic, so
tests and benches know what is flagged; the faults and the API key of the fake apply to it
like to chat completions (a fault for model ``omni-moderation-latest`` hits only this route).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

DEFAULT_MODEL = "omni-moderation-latest"

TRIGGERS: dict[str, tuple[str, ...]] = {
    "violence": ("kill", "murder", "massacre", "behead"),
    "self-harm": ("suicide", "self-harm"),
    "hate": ("subhuman", "exterminate"),
    "illicit": ("methamphetamine", "nerve agent", "pipe bomb"),
    "harassment": ("worthless idiot",),
}
_PATTERNS = {
    category: re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)
    for category, words in TRIGGERS.items()
}


def moderate_text(text: str) -> dict[str, Any]:
    """One moderation result."""
    categories = {category: bool(pattern.search(text)) for category, pattern in _PATTERNS.items()}
    return {
        "flagged": any(categories.values()),
        "categories": categories,
        "category_scores": {c: 0.9 if hit else 0.01 for c, hit in categories.items()},
    }


def moderation_answer(body: dict[str, Any]) -> dict[str, Any] | None:
    """The answer to a ``/moderations`` body; None when the body is not one."""
    raw = body.get("input")
    inputs: list[Any] = raw if isinstance(raw, list) else [raw]
    texts: list[str] = []
    for item in inputs:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict) and item.get("type") == "text" and isinstance(item.get("text"), str):
            texts.append(item["text"])
        else:
            return None
    return {
        "id": f"modr-{uuid.uuid4().hex[:24]}",
        "model": str(body.get("model") or DEFAULT_MODEL),
        "results": [moderate_text(t) for t in texts],
    }
