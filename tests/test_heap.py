"""The operator's heap trimmer: glibc's malloc_trim after work, never while idle."""

from __future__ import annotations

import sys

import pytest

from sentient_operator.heap import HeapTrimmer


async def test_trims_once_per_burst_of_work_and_never_while_idle() -> None:
    done = 0
    trimmer = HeapTrimmer(lambda: done)
    if not trimmer.available:
        pytest.skip("no malloc_trim on this platform")
    assert not await trimmer.run_once()  # nothing reconciled yet
    done = 5
    assert await trimmer.run_once()
    assert not await trimmer.run_once()  # idle since: nothing to give back
    done = 6
    assert await trimmer.run_once()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_glibc_has_malloc_trim() -> None:
    assert HeapTrimmer(lambda: 0).available
