"""OwnWrites: the echo of our own status write is recognised, nothing else is."""

from sentient_operator.reconcile.own_writes import OwnWrites


def test_only_the_version_our_last_write_made_is_an_echo() -> None:
    writes = OwnWrites()
    assert not writes.is_echo("team", "a", "5")
    writes.record("team", "a", {"metadata": {"resourceVersion": "5"}})
    assert writes.is_echo("team", "a", "5")
    assert not writes.is_echo("team", "a", "6")  # somebody else's write after ours
    assert not writes.is_echo("team", "b", "5")
    assert not writes.is_echo("team", "a", None)
    writes.record("team", "a", "7")
    assert not writes.is_echo("team", "a", "5")
    assert writes.is_echo("team", "a", "7")


def test_a_write_that_returned_nothing_is_not_recorded_and_forget_drops_it() -> None:
    writes = OwnWrites()
    writes.record("team", "a", None)
    writes.record("team", "b", {"metadata": {}})
    assert len(writes) == 0
    writes.record("team", "a", "3")
    writes.forget("team", "a")
    assert not writes.is_echo("team", "a", "3")
    assert len(writes) == 0
