"""The labelled prompt corpus of the guardrails (``tests/data/guardrails_corpus.jsonl``).

One JSON object per line: ``id``, ``text``, ``injection`` (an injection attempt or not), ``pii``
(the entity kinds the text holds), ``note`` (why it is there: what it looks like, what it is).
Written for this project: ordinary prompts, benign prompts that look risky, personal data,
injection attempts, and hard ones (paraphrases, other languages) the heuristics are expected
to miss. ``bench/guardrails.py`` prints the detection and false-positive rates over it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parents[1] / "data" / "guardrails_corpus.jsonl"


def load_corpus(path: Path = CORPUS) -> list[dict[str, Any]]:
    """The labelled prompts."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
