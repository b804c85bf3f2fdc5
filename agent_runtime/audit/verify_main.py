"""``python -m agent_runtime.audit LOG KEYFILE``: verify a chain from the command line."""

from __future__ import annotations

import sys
from pathlib import Path

from agent_runtime.audit.chain import verify_file


def main(argv: list[str] | None = None) -> int:
    """Verify a chain; exit 1 where it breaks, 2 on wrong usage."""
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 2:
        print("usage: python -m agent_runtime.audit LOG_FILE KEY_FILE", file=sys.stderr)
        return 2
    key = Path(args[1]).read_text().rstrip("\r\n").encode()
    result = verify_file(Path(args[0]), key)
    if result.ok:
        print(f"ok: {result.records} records")
        return 0
    print(f"broken at line {result.line}: {result.reason}")
    return 1
