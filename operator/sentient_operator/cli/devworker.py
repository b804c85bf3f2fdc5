"""A pre-warmed ``python -m agent_runtime`` for ``sentient dev``.

Importing the runtime and its dependencies takes about a second; the user's
agent module takes milliseconds. ``sentient dev`` therefore keeps one spare
worker that has done the heavy imports and waits for a line of JSON on stdin
(``{"config": PATH, "credentials": DIR, "audit_log": PATH}``); it then runs
the runtime's own entry point, which imports the agent module fresh. Nothing
of the user's code is imported before that line arrives.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import sys
import threading


def main() -> None:
    """Warm up, announce ``warm``, wait for the go line, then serve like ``python -m agent_runtime``."""
    import agent_runtime.__main__ as runtime_main
    import agent_runtime.agents.chat
    import agent_runtime.app
    import agent_runtime.routes.openai  # noqa: F401

    # uvicorn imports its protocol, lifespan and loop modules only when a server starts.
    for name in (
        "uvloop",
        "httptools",
        "uvicorn.loops.uvloop",
        "uvicorn.protocols.http.httptools_impl",
        "uvicorn.lifespan.on",
        "uvicorn.middleware.proxy_headers",
    ):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)

    sys.stdout.write("warm\n")
    sys.stdout.flush()
    line = sys.stdin.readline()
    if not line.strip():
        return  # dismissed before use
    order = json.loads(line)
    os.environ["SENTIENT_CONFIG"] = order["config"]
    os.environ["SENTIENT_CREDENTIALS_DIR"] = order["credentials"]
    os.environ["SENTIENT_HOST"] = "127.0.0.1"
    os.environ["SENTIENT_DEV"] = "1"  # the capture bus the dashboard (/_dev/) reads
    if order.get("audit_log"):
        os.environ["SENTIENT_AUDIT_LOG"] = order["audit_log"]
    if order.get("audit_spool"):
        os.environ["SENTIENT_AUDIT_SPOOL_DIR"] = order["audit_spool"]
    # The parent keeps our stdin open; EOF means it is gone, and an orphan must not keep serving.
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    runtime_main.main()


def _exit_with_parent() -> None:
    while sys.stdin.readline():
        pass
    os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    main()
