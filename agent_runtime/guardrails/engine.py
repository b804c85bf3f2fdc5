"""Runs the configured checks in order over a request's texts or an answer.

For one stage (``input`` or ``output``) the checks run in the order of the config; a
redaction rewrites the texts the next checks see; the first ``block`` ends the run. Every
result is counted (``sentient_guardrail_verdicts_total{check,stage,action}``, ``pass``
included) and every verdict that is not a pass is written to the audit log as
``guardrail.verdict`` with the kinds found and the score, never the matched text.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from agent_runtime import devbus, metrics
from agent_runtime.audit import AuditLog
from agent_runtime.config import GuardrailCheck, GuardrailsConfig
from agent_runtime.guardrails.base import Check, Finding, SpanCheck, redact
from agent_runtime.guardrails.injection import InjectionHeuristics
from agent_runtime.guardrails.moderation import Moderation, ModerationClient, ModerationUnavailable
from agent_runtime.guardrails.patterns import DenyPatterns
from agent_runtime.guardrails.pii import PIIDetector
from agent_runtime.guardrails.size import SizeLimits

log = logging.getLogger("agent_runtime.guardrails")

Stage = Literal["input", "output"]
ReadFile = Callable[[str], str | None]

# The stable code of a refusal, on both protocols.
BLOCKED_CODE = "guardrail_blocked"

# Local checks over more characters than this run in a worker thread: the regex checks take
# about 0.4 s over a 1 MB prompt, and on the event loop that would hold up every other request
# of the process for as long. In a thread the loop keeps getting turns (the GIL changes hands
# every few milliseconds); smaller texts stay inline, where a hand-off costs more than the scan.
OFFLOAD_CHARS = 64 * 1024


@dataclass(frozen=True, slots=True)
class Verdict:
    """The result of one check that did not pass."""

    check: str
    kind: str
    stage: Stage
    action: str
    labels: tuple[str, ...] = ()
    score: float | None = None


@dataclass(frozen=True, slots=True)
class Context:
    """Who and what a screening is for (audit fields)."""

    route: str
    request_id: str
    principal: str | None = None


@dataclass(slots=True)
class Screening:
    """The outcome of one stage: the texts (redacted where asked), verdicts, and the block if any."""

    texts: list[str]
    verdicts: list[Verdict] = field(default_factory=list)
    blocked: Verdict | None = None
    redacted: bool = False

    def refusal_details(self) -> dict[str, str]:
        """What the caller is told about a block: the stable code, the check and the stage."""
        assert self.blocked is not None
        return {"code": BLOCKED_CODE, "check": self.blocked.check, "stage": self.blocked.stage}


def build_check(config: GuardrailCheck, moderation: ModerationClient | None) -> Check:
    """The check a config entry describes."""
    name, action = config.label, config.action
    if config.size is not None:
        return SizeLimits(name, action, config.size)
    if config.patterns is not None:
        return DenyPatterns(name, action, config.patterns)
    if config.pii is not None:
        return PIIDetector(name, action, config.pii)
    if config.injection is not None:
        return InjectionHeuristics(name, action, config.injection)
    assert config.moderation is not None and moderation is not None, "validated by the config"
    return Moderation(name, action, config.moderation, moderation)


class Guardrails:
    """The checks of one config snapshot, with the audit log and metrics they report to."""

    def __init__(self, config: GuardrailsConfig, read_file: ReadFile, audit: AuditLog | None) -> None:
        self.config = config
        self.audit = audit
        self.moderation = ModerationClient(config.moderation, read_file) if config.moderation else None
        self.input: list[Check] = [build_check(c, self.moderation) for c in config.input]
        self.output: list[Check] = [build_check(c, self.moderation) for c in config.output]
        self.stream_window = config.stream_window
        # Counter children bound once: a label lookup per check per request costs more than the check.
        self._counters = {
            (check.name, stage, action): metrics.GUARDRAIL_VERDICTS.labels(
                check=check.name, stage=stage, action=action
            )
            for stage, checks in (("input", self.input), ("output", self.output))
            for check in checks
            for action in ("pass", "block", "redact", "flag", "error")
        }
        self._duration = {
            stage: metrics.GUARDRAIL_DURATION.labels(stage=stage) for stage in ("input", "output")
        }

    def checks(self, stage: Stage) -> list[Check]:
        """The checks of ``stage``, in order."""
        return self.input if stage == "input" else self.output

    async def screen(
        self, stage: Stage, texts: Sequence[str], context: Context, checks: Sequence[Check] | None = None
    ) -> Screening:
        """Run the checks of ``stage`` (or the given ones of it) over ``texts``."""
        started = time.perf_counter()
        screening = Screening(list(texts))
        offload = sum(map(len, screening.texts)) > OFFLOAD_CHARS
        for check in self.checks(stage) if checks is None else checks:
            try:
                if check.remote:
                    finding = await check.ascan(screening.texts)
                elif offload:
                    finding = await asyncio.to_thread(check.scan, list(screening.texts))
                else:
                    finding = check.scan(screening.texts)
            except ModerationUnavailable as exc:
                self._unavailable(check, stage, exc.reason, context, screening)
                if screening.blocked is not None:
                    break
                continue
            if self.apply(check, stage, finding, context, screening):
                break
        self._duration[stage].observe(time.perf_counter() - started)
        return screening

    def apply(
        self, check: Check, stage: Stage, finding: Finding | None, context: Context, screening: Screening
    ) -> bool:
        """Count, audit and act on one check's finding; True when it blocks."""
        if finding is None:
            self.count_pass(check, stage)
            bus = devbus.BUS
            if bus is not None:
                bus.publish("guardrail", context.request_id, check=check.name, stage=stage, action="pass")
            return False
        verdict = Verdict(check.name, check.kind, stage, check.action, finding.labels, finding.score)
        self.report(verdict, context)
        screening.verdicts.append(verdict)
        if check.action == "block":
            screening.blocked = verdict
            return True
        if check.action == "redact" and isinstance(check, SpanCheck):
            for index, text in enumerate(screening.texts):
                spans = [s for s in finding.spans if s.index == index]
                if spans:
                    screening.texts[index] = redact(text, spans)
            screening.redacted = True
        return False

    def count_pass(self, check: Check, stage: Stage) -> None:
        """Count a check that passed (streams count theirs once the answer has ended)."""
        self._counters[(check.name, stage, "pass")].inc()

    def _unavailable(
        self, check: Check, stage: Stage, reason: str, context: Context, screening: Screening
    ) -> None:
        closed = self.moderation is not None and self.moderation.fail_closed
        log.warning("moderation service unavailable (%s); failing %s", reason, "closed" if closed else "open")
        verdict = Verdict(
            check.name, check.kind, stage, "block" if closed else "error", ("unavailable", reason)
        )
        self.report(verdict, context)
        screening.verdicts.append(verdict)
        if closed:
            screening.blocked = verdict

    def report(self, verdict: Verdict, context: Context) -> None:
        """Count and audit one verdict (kinds and score only)."""
        self._counters[(verdict.check, verdict.stage, verdict.action)].inc()
        bus = devbus.BUS
        if bus is not None:
            bus.publish(
                "guardrail",
                context.request_id,
                check=verdict.check,
                stage=verdict.stage,
                action=verdict.action,
                found=list(verdict.labels),
                score=verdict.score,
            )
        if self.audit is not None:
            self.audit.record(
                "guardrail.verdict",
                check=verdict.check,
                kind=verdict.kind,
                stage=verdict.stage,
                action=verdict.action,
                found=list(verdict.labels),
                score=verdict.score,
                route=context.route,
                request_id=context.request_id,
                principal=context.principal,
            )

    async def aclose(self) -> None:
        """Close the moderation client."""
        if self.moderation is not None:
            await self.moderation.aclose()
