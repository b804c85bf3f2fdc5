#!/usr/bin/env python3
"""An OCI runtime in front of runc that drops the capabilities this host cannot grant.

Some hosts (containers running Docker, sandboxes) have a capability bounding set without, for
example, CAP_SYS_RESOURCE. ``docker run --privileged`` then fails with "unable to apply caps:
operation not permitted", and kind passes ``--privileged`` for every node. Registered with dockerd
as its default runtime (``--add-runtime sentient-runc=<this file> --default-runtime
sentient-runc``), this shim removes every capability outside the host's bounding set from the
bundle's ``config.json`` (``create``/``run``) or from the ``--process`` file (``exec``), then
executes runc with the same arguments. Everything else passes through unchanged.

Standard library only: dockerd runs it with the system Python, not the project's environment.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

RUNC = os.environ.get("SENTIENT_RUNC", "/usr/bin/runc")

# Linux capability numbers (linux/capability.h) of the names OCI specs use.
_CAP_NAMES = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
]


def bounding_set() -> set[str]:
    """The names (``CAP_...``) of the capabilities in this process's bounding set."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            mask = int(line.split()[1], 16)
            return {f"CAP_{name}" for bit, name in enumerate(_CAP_NAMES) if mask >> bit & 1}
    return {f"CAP_{name}" for name in _CAP_NAMES}


def strip_capabilities(path: Path, allowed: set[str], *, process_only: bool) -> None:
    """Rewrite ``path`` (a bundle config.json or a process.json) without unavailable capabilities."""
    doc = json.loads(path.read_text())
    process = doc if process_only else doc.get("process", {})
    caps = process.get("capabilities") or {}
    changed = False
    for kind, names in caps.items():
        if isinstance(names, list):
            kept = [n for n in names if n in allowed]
            changed = changed or len(kept) != len(names)
            caps[kind] = kept
    if changed:
        path.write_text(json.dumps(doc))


def _option(args: list[str], *names: str) -> str | None:
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def main() -> None:
    """Fix up the spec of create/run/exec, then become runc."""
    args = sys.argv[1:]
    allowed = bounding_set()
    commands = [a for a in args if not a.startswith("-")]
    try:
        if "create" in commands or "run" in commands:
            bundle = _option(args, "--bundle", "-b") or "."
            strip_capabilities(Path(bundle) / "config.json", allowed, process_only=False)
        elif "exec" in commands:
            process = _option(args, "--process", "-p")
            if process:
                strip_capabilities(Path(process), allowed, process_only=True)
    except (OSError, ValueError) as exc:  # let runc report the real problem
        print(f"sentient-runc: {exc}", file=sys.stderr)
    os.execv(RUNC, [RUNC, *args])  # noqa: S606 - becoming runc is the point


if __name__ == "__main__":
    main()
