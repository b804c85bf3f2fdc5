"""The audit sinks' on-disk buffer: order across segments, restart, torn tail, cap (newest dropped)."""

from __future__ import annotations

from pathlib import Path

from agent_runtime.audit.spool import MIN_SEGMENT_BYTES, Spool


def _record(i: int, pad: int = 100) -> bytes:
    return b'{"seq":%d,"pad":"%s"}\n' % (i, b"x" * pad)


def _drain(spool: Spool, batch: int = 7) -> list[bytes]:
    shipped: list[bytes] = []
    while True:
        lines, position = spool.read(batch, 1 << 20)
        if position is None:
            return shipped
        shipped.extend(lines)
        spool.commit(position)


def test_records_come_out_in_order_across_segments_and_shipped_segments_go(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10 << 20, segment_bytes=MIN_SEGMENT_BYTES)
    records = [_record(i, 1000) for i in range(300)]  # about 300 KB: several segments
    assert all(spool.append(r) for r in records)
    assert len(list(tmp_path.glob("*.seg"))) > 3
    assert spool.pending_records == 300
    assert [line + b"\n" for line in _drain(spool)] == records
    assert spool.pending_records == 0
    assert len(list(tmp_path.glob("*.seg"))) == 1  # the one being appended to stays
    spool.close()


def test_a_restart_resumes_after_the_last_committed_batch(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10 << 20, segment_bytes=MIN_SEGMENT_BYTES)
    for i in range(200):
        spool.append(_record(i, 1000))
    _, position = spool.read(50, 1 << 20)
    assert position is not None
    spool.commit(position)
    spool.read(50, 1 << 20)  # read but never acknowledged: must come again
    spool.close()

    again = Spool(tmp_path, 10 << 20, segment_bytes=MIN_SEGMENT_BYTES)
    assert again.pending_records == 150
    rest = _drain(again)
    assert rest[0].startswith(b'{"seq":50,') and rest[-1].startswith(b'{"seq":199,')
    assert len(rest) == 150
    again.append(_record(200))
    assert _drain(again) == [_record(200)[:-1]]
    again.close()


def test_a_record_torn_by_a_crash_is_cut_and_the_rest_kept(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    for i in range(3):
        spool.append(_record(i))
    spool.close()
    segment = next(tmp_path.glob("*.seg"))
    with segment.open("ab") as handle:
        handle.write(b'{"seq":3,"pa')  # the process died mid-write
    again = Spool(tmp_path, 1 << 20)
    assert again.pending_records == 3
    again.append(_record(4))
    assert [line + b"\n" for line in _drain(again)] == [_record(0), _record(1), _record(2), _record(4)]
    again.close()


def test_a_full_spool_refuses_the_newest_records_and_keeps_what_it_has(tmp_path: Path) -> None:
    cap = 1 << 20
    spool = Spool(tmp_path, cap)
    accepted = [i for i in range(20_000) if spool.append(_record(i))]
    assert accepted == list(range(len(accepted)))  # a prefix: only the newest were refused
    assert 0 < spool.disk_bytes <= cap
    shipped = _drain(spool, batch=500)
    assert len(shipped) == len(accepted)
    assert spool.append(_record(20_000))  # room again once shipped
    spool.close()
