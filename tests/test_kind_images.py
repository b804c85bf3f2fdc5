"""The kind image builder's own bookkeeping (e2e/kind/images.py), without Docker."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.kind import images


def test_kind_binaries_build_on_an_empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The cold CI run's first kind step (the kind binary) failed: no $SENTIENT_CACHE/kind/bin yet.
    monkeypatch.setenv("SENTIENT_CACHE", str(tmp_path / "cache"))

    def build(dest: Path) -> None:
        (dest / "tool").write_text("#!/bin/sh\n")

    built = images._cached_binaries("tool-v1", "1", ("tool",), build)
    assert built["tool"].read_text() == "#!/bin/sh\n"
    assert built["tool"].parent == tmp_path / "cache" / "kind" / "bin" / "tool-v1-1"
