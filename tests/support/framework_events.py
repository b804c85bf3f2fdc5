"""Parse SSE events with the Sentient Agent Framework's own models (run by that framework's venv).

Reads ``[{"event": <event: line>, "data": <data: line>}, ...]`` as JSON on stdin
(one list per response, in a list) and writes, per event, the framework's model
name, its ``content_type`` and ``id``; exits 1 naming the first event the
framework refuses or whose ``event:`` line differs from its ``event_name``.

    <saf venv>/bin/python tests/support/framework_events.py < responses.json
"""

from __future__ import annotations

import json
import sys
from typing import Any


def main() -> int:
    """Validate every event of every response given on stdin."""
    from pydantic import ValidationError
    from sentient_agent_framework.interface.events import ResponseEventAdapter

    responses: list[list[dict[str, str]]] = json.load(sys.stdin)
    out: list[list[dict[str, Any]]] = []
    for n, records in enumerate(responses):
        parsed = []
        for record in records:
            try:
                event = ResponseEventAdapter.validate_json(record["data"])
            except ValidationError as exc:
                print(f"response {n}: the framework refuses {record['data']}: {exc}", file=sys.stderr)
                return 1
            if event.event_name != record["event"]:
                print(
                    f"response {n}: event: {record['event']!r} but event_name {event.event_name!r}",
                    file=sys.stderr,
                )
                return 1
            parsed.append(
                {"model": type(event).__name__, "content_type": event.content_type.value, "id": str(event.id)}
            )
        out.append(parsed)
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
