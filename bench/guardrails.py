"""Guardrails benchmark: detection rate and false-positive rate per check, and what a check costs.

Runs every check of ``agent_runtime.guardrails`` over the labelled corpus in
``tests/data/guardrails_corpus.jsonl`` (prompts written for this project: ordinary ones,
benign ones that look risky, personal data, injection attempts including paraphrases and
other languages the heuristics are expected to miss):

- injection: a prompt labelled ``injection`` must reach the threshold, any other must not;
- pii:<entity>: a prompt whose ``pii`` labels name the entity must be found, any other must not.

Detection rate = found / labelled; false-positive rate = found / not labelled. The cost is the
time one request's texts spend in a check (CPU only, one process, no HTTP), median and p99,
and for the moderation check one round trip to the fake upstream's ``/v1/moderations`` on
loopback (the cost floor of a remote call; a real service adds its own latency).

    PYTHONPATH=operator:. python bench/guardrails.py [--repeat 20] [--misses] [--no-moderation]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "operator")]

from agent_runtime.config import PII_ENTITIES, GuardrailsConfig  # noqa: E402
from agent_runtime.guardrails.engine import Context, Guardrails  # noqa: E402
from tests.support.guardrails_corpus import CORPUS, load_corpus  # noqa: E402

CONTEXT = Context("/bench", "bench")


def _guardrails(checks: list[dict[str, Any]], moderation: str | None = None) -> Guardrails:
    data: dict[str, Any] = {"input": checks}
    if moderation is not None:
        data["moderation"] = {"endpoint": moderation, "timeout": "2s"}
    return Guardrails(GuardrailsConfig.model_validate(data), lambda _: None, None)


def _percentile(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1000.0


async def _timed(guardrails: Guardrails, corpus: list[dict[str, Any]], repeat: int) -> list[int]:
    out: list[int] = []
    for _ in range(repeat):
        for item in corpus:
            start = time.perf_counter_ns()
            await guardrails.screen("input", [item["text"]], CONTEXT)
            out.append(time.perf_counter_ns() - start)
    return sorted(out)


async def _fired(guardrails: Guardrails, text: str) -> set[str]:
    screening = await guardrails.screen("input", [text], CONTEXT)
    return {label for verdict in screening.verdicts for label in verdict.labels}


async def rates(corpus: list[dict[str, Any]]) -> list[tuple[str, int, float, int, float, list[str]]]:
    """(check, labelled, detection rate, unlabelled, false-positive rate, wrong ids) per check."""
    rows = []
    injection = _guardrails([{"injection": {}, "action": "flag"}])
    expected = {item["id"]: item["injection"] for item in corpus}
    found = {item["id"]: bool(await _fired(injection, item["text"])) for item in corpus}
    rows.append(_row("injection (threshold 0.5)", expected, found))
    for entity in PII_ENTITIES:
        pii = _guardrails([{"pii": {"entities": [entity]}, "action": "flag"}])
        expected = {item["id"]: entity in item["pii"] for item in corpus}
        found = {item["id"]: entity in await _fired(pii, item["text"]) for item in corpus}
        rows.append(_row(f"pii:{entity}", expected, found))
    return rows


def _row(
    name: str, expected: dict[str, bool], found: dict[str, bool]
) -> tuple[str, int, float, int, float, list[str]]:
    positives = [i for i, e in expected.items() if e]
    negatives = [i for i, e in expected.items() if not e]
    detected = sum(found[i] for i in positives)
    false_pos = sum(found[i] for i in negatives)
    wrong = [f"missed {i}" for i in positives if not found[i]] + [f"false {i}" for i in negatives if found[i]]
    return (
        name,
        len(positives),
        detected / len(positives) if positives else 1.0,
        len(negatives),
        false_pos / len(negatives) if negatives else 0.0,
        wrong,
    )


async def costs(
    corpus: list[dict[str, Any]], repeat: int, moderation: bool
) -> list[tuple[str, float, float]]:
    """(configuration, median µs, p99 µs) per request of the corpus."""
    configs: list[tuple[str, list[dict[str, Any]]]] = [
        ("size", [{"size": {"maxChars": 32000, "maxLines": 2000}}]),
        (
            "patterns (5 deny)",
            [
                {
                    "patterns": {
                        "deny": [
                            r"(?i)\brm\s+-rf\b",
                            r"(?i)drop\s+table",
                            "(?i)launch code",
                            r"\bpasswd\b",
                            "(?i)nerve agent",
                        ]
                    }
                }
            ],
        ),
        ("pii (all entities)", [{"pii": {}, "action": "redact"}]),
        ("injection", [{"injection": {}}]),
        (
            "all local checks (size, patterns, pii, injection)",
            [
                {"size": {"maxChars": 32000}},
                {"patterns": {"deny": [r"(?i)\brm\s+-rf\b", r"(?i)drop\s+table"]}},
                {"pii": {}, "action": "redact"},
                {"injection": {}, "action": "flag"},
            ],
        ),
    ]
    rows = []
    for name, checks in configs:
        ns = await _timed(_guardrails(checks), corpus, repeat)
        rows.append((name, _percentile(ns, 0.5), _percentile(ns, 0.99)))
    if moderation:
        from agent_runtime.testing.control import run_fake

        with run_fake("openai") as fake:
            guardrails = _guardrails([{"moderation": {}}], moderation=fake.endpoint)
            try:
                ns = await _timed(guardrails, corpus, max(1, repeat // 10))
            finally:
                await guardrails.aclose()
        rows.append(
            ("moderation (fake upstream, loopback HTTP)", _percentile(ns, 0.5), _percentile(ns, 0.99))
        )
    return rows


async def main() -> None:
    """Print the detection table and the cost table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=20, help="Passes over the corpus for the cost figures.")
    parser.add_argument("--misses", action="store_true", help="List the prompts each check got wrong.")
    parser.add_argument("--no-moderation", action="store_true", help="Skip the moderation round trips.")
    args = parser.parse_args()
    corpus = load_corpus()
    benign = sum(not item["injection"] and not item["pii"] for item in corpus)
    print(
        f"corpus: {len(corpus)} prompts ({benign} benign, {len(corpus) - benign} with a label), {CORPUS.relative_to(REPO)}"
    )
    print()
    print(f"{'check':<28} {'labelled':>8} {'detected':>9} {'others':>7} {'false pos':>10}")
    for name, positives, detection, negatives, fp_rate, wrong in await rates(corpus):
        print(f"{name:<28} {positives:>8} {detection:>8.1%} {negatives:>7} {fp_rate:>9.1%}")
        if args.misses and wrong:
            print("    " + ", ".join(wrong))
    print()
    print(f"cost per request (corpus prompts, {args.repeat} passes): median and p99, microseconds")
    for name, median, p99 in await costs(corpus, args.repeat, not args.no_moderation):
        print(f"  {name:<52} {median:>8.1f} {p99:>9.1f}")


if __name__ == "__main__":
    asyncio.run(main())
