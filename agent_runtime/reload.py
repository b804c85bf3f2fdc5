"""Hot reload of the config file and the credentials directory.

The kubelet updates a mounted ConfigMap or Secret by writing a new
timestamped directory and swapping the ``..data`` symlink, so single-file
watches miss updates; the watcher fingerprints the directory (the ``..data``
target when present, else names, sizes and mtimes of every file) and polls it.

:class:`CredentialFiles` is what the LLM layer, the authenticator and the
limiter read secrets through: ``read(name)`` returns the current content from
a cache that the watcher drops as a whole when the directory changes, so a
rotated key is used by the next upstream attempt without a restart and no
request pays for a file read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

log = logging.getLogger("agent_runtime.reload")

#: Seconds between polls. A poll is one readlink (or a few stats), so polling often is cheap,
#: and it bounds how long a rotated key waits before the next upstream request uses it.
DEFAULT_WATCH_INTERVAL = 0.25

_MAX_CREDENTIAL_BYTES = 1 << 20


class CredentialFiles:
    """Reads files of the credentials directory, cached until the directory changes."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self._cache: dict[str, str | None] = {}
        self.generation = 0

    def read(self, name: str) -> str | None:
        """Current content of ``name`` (trailing newline stripped), or None if absent.

        The same ``str`` object is returned until the directory changes, which
        lets readers detect changes with an identity check.
        """
        try:
            return self._cache[name]
        except KeyError:
            pass
        if not name or "/" in name or "\\" in name or name.startswith(".."):
            raise ValueError(f"invalid credential file name {name!r}")
        path = self.directory / name
        try:
            with path.open("rb") as handle:
                data = handle.read(_MAX_CREDENTIAL_BYTES + 1)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            value = None
        else:
            if len(data) > _MAX_CREDENTIAL_BYTES:
                raise ValueError(f"credential file {name!r} is larger than 1 MiB")
            value = data.decode("utf-8").rstrip("\r\n")
        self._cache[name] = value
        return value

    def invalidate(self) -> None:
        """Forget everything read; the next ``read`` sees the files as they are now."""
        # One assignment, so a concurrent reader sees either the old or the new dict.
        self._cache = {}
        self.generation += 1


def directory_fingerprint(directory: Path) -> tuple[object, ...]:
    """Something that changes whenever a file of ``directory`` changes."""
    try:
        target: str | None = str((directory / "..data").readlink())
    except OSError:
        target = None
    if target is not None:
        return ("..data", target)
    entries: list[tuple[str, int, int, int]] = []
    try:
        with os.scandir(directory) as scan:
            for entry in scan:
                try:
                    stat = entry.stat()
                except OSError:
                    continue
                entries.append((entry.name, stat.st_mtime_ns, stat.st_size, stat.st_ino))
    except OSError:
        return ("missing",)
    entries.sort()
    return tuple(entries)


def file_fingerprint(path: Path) -> tuple[object, ...]:
    """Something that changes whenever ``path`` (or the symlink chain to it) changes."""
    parent = directory_fingerprint(path.parent) if (path.parent / "..data").exists() else ()
    try:
        stat = path.stat()
    except OSError:
        return ("missing", *parent)
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino, *parent)


class FileWatcher:
    """Polls the config file and the credentials directory and calls back on change.

    Callbacks run on the event loop, one at a time, in order: credentials
    first (so that a config that names a new file finds it), then config.
    """

    def __init__(
        self,
        config_path: Path,
        credentials: CredentialFiles,
        on_config_change: Callable[[], Awaitable[None]],
        on_credentials_change: Callable[[], Awaitable[None]],
        interval: float = DEFAULT_WATCH_INTERVAL,
    ) -> None:
        self.config_path = config_path
        self.credentials = credentials
        self._on_config = on_config_change
        self._on_credentials = on_credentials_change
        self.interval = interval
        self._config_fp = file_fingerprint(config_path)
        self._creds_fp = directory_fingerprint(credentials.directory)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start polling in the background."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="sentient-file-watcher")

    async def stop(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def check(self) -> None:
        """One poll: fire the callbacks for whatever changed since the last poll."""
        creds_fp = directory_fingerprint(self.credentials.directory)
        if creds_fp != self._creds_fp:
            self._creds_fp = creds_fp
            self.credentials.invalidate()
            await self._on_credentials()
        config_fp = file_fingerprint(self.config_path)
        if config_fp != self._config_fp:
            self._config_fp = config_fp
            await self._on_config()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception:
                log.exception("reload check failed")
