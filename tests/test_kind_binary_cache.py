"""The kind stage's binary cache works on an empty cache (the first cold CI run failed there)."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.kind import images


def test_cached_binaries_builds_into_an_empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTIENT_CACHE", str(tmp_path / "fresh"))
    builds: list[Path] = []

    def build(dest: Path) -> None:
        builds.append(dest)
        (dest / "tool").write_text("#!/bin/sh\n")

    first = images._cached_binaries("tool-v1", "k", ("tool",), build)
    assert first["tool"].is_file()
    again = images._cached_binaries("tool-v1", "k", ("tool",), build)
    assert again == first
    assert len(builds) == 1, "the second call must come from the cache"
