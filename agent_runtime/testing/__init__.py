"""Fake LLM upstreams (OpenAI, Anthropic) for tests, the demo and benchmarks."""

from __future__ import annotations

from agent_runtime.testing.control import FakeState, FakeUpstream, Fault, answer_for, run_fake, wait_until

__all__ = ["FakeState", "FakeUpstream", "Fault", "answer_for", "run_fake", "wait_until"]
