"""kopf handlers of the three kinds. Importing this package registers them all."""

from __future__ import annotations

import importlib.util

from sentient_operator.handlers import agent, policy, runtime

# The LLMProvider handler lives in its own module (credentials sync); it is imported when present.
if importlib.util.find_spec("sentient_operator.handlers.provider") is not None:
    importlib.import_module("sentient_operator.handlers.provider")

__all__ = ["agent", "policy", "runtime"]
