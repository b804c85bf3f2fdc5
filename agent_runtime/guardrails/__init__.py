"""Guardrails: the validation pipeline of prompts and answers (see ``docs/guardrails.md``).

One module per kind of check (``size``, ``patterns``, ``pii``, ``injection``, ``moderation``)
behind the small interface of :mod:`.base`; :mod:`.engine` runs them in their configured order,
:mod:`.stream` applies them to a streamed answer, :mod:`.redaction` masks logs and audit records.

This package file imports nothing: ``agent_runtime.config`` uses :mod:`.regex` to compile
patterns, and the other modules import the config.
"""
