"""Keyed fingerprints: stable, key-dependent, order-independent, never the value."""

from __future__ import annotations

import hashlib

from sentient_operator.credentials.fingerprint import fingerprint, fingerprint_data, same_fingerprint


def test_fingerprint_is_keyed_and_stable() -> None:
    a = fingerprint(b"k1" * 16, "sk-secret")
    assert a == fingerprint(b"k1" * 16, b"sk-secret")
    assert a != fingerprint(b"k2" * 16, "sk-secret")
    assert a.startswith("hmac-sha256:")
    # Not the plain hash anyone could compute from a guess.
    assert hashlib.sha256(b"sk-secret").hexdigest() not in a
    assert "sk-secret" not in a


def test_fingerprint_data_ignores_order_and_separates_fields() -> None:
    key = b"x" * 32
    assert fingerprint_data(key, {"a": "1", "b": "2"}) == fingerprint_data(key, {"b": "2", "a": "1"})
    assert fingerprint_data(key, {"ab": "c"}) != fingerprint_data(key, {"a": "bc"})
    assert fingerprint_data(key, {"a": "1"}) != fingerprint_data(key, {"a": "1", "ca.pem": ""})


def test_same_fingerprint() -> None:
    assert same_fingerprint("hmac-sha256:ab", "hmac-sha256:ab")
    assert not same_fingerprint("hmac-sha256:ab", "hmac-sha256:ac")
    assert not same_fingerprint(None, "x")
