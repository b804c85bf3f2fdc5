"""Units of OIDC support and roles: the introspection cache (bounds, TTLs), role resolution, and
the tier a role gives reaching the rate limiter.

The introspection endpoint here is an httpx transport answering like an RFC 7662 server, so that
calls can be counted and the clock moved; the real server (ORY Hydra) is in test_runtime_oidc.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_runtime import protocol
from agent_runtime.auth import AuthError, Principal
from agent_runtime.auth.introspection import MAX_CALLS_IN_FLIGHT, Introspector
from agent_runtime.auth.roles import Roles, claim_values
from agent_runtime.config import AuthorizationConfig, IntrospectionConfig
from agent_runtime.testing import FakeUpstream
from tests.support.runtime import (
    InProcessRuntime,
    RuntimeFiles,
    chain_entry,
    default_credentials,
    make_config,
)

ISSUER = "https://issuer.test"


class Endpoint:
    """Answers introspection requests from a table token -> claims; counts calls, checks client auth."""

    def __init__(self, answers: dict[str, dict[str, Any]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"].startswith("Basic ")
        form = dict(httpx.QueryParams(request.content.decode()))
        self.calls.append(form["token"])
        return httpx.Response(200, json=self.answers.get(form["token"], {"active": False}))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def introspector(endpoint: Callable[[httpx.Request], Any], clock: Clock, **config: Any) -> Introspector:
    settings = IntrospectionConfig.model_validate(
        {
            "clientID": "agent",
            "clientSecretFile": "secret",
            "cacheTTL": "30s",
            "negativeCacheTTL": "5s",
            **config,
        }
    )

    async def url() -> str:
        return "https://issuer.test/introspect"

    client = httpx.AsyncClient(transport=httpx.MockTransport(endpoint))
    return Introspector(settings, ISSUER, ["agent"], lambda _name: "s3cret", client, url, clock)


def active(exp: float, **claims: Any) -> dict[str, Any]:
    return {"active": True, "sub": "svc", "iss": ISSUER, "aud": ["agent"], "exp": exp, **claims}


async def test_answers_are_cached_within_ttl_and_never_past_exp() -> None:
    clock = Clock()
    endpoint = Endpoint({"long": active(clock.now + 3600)})
    checker = introspector(endpoint, clock)
    for _ in range(5):
        assert (await checker.claims("long"))["sub"] == "svc"
    assert endpoint.calls == ["long"]
    clock.now += 31  # past cacheTTL: asked again
    await checker.claims("long")
    assert endpoint.calls == ["long", "long"]
    endpoint.answers["short"] = active(clock.now + 10)
    await checker.claims("short")
    clock.now += 11  # the token's exp comes before cacheTTL: the cached answer is gone with it
    endpoint.answers["short"] = active(clock.now - 1)
    with pytest.raises(AuthError) as info:
        await checker.claims("short")
    assert info.value.reason == "token_expired"


async def test_inactive_answers_are_cached_briefly() -> None:
    clock = Clock()
    endpoint = Endpoint({})
    checker = introspector(endpoint, clock)
    for _ in range(3):
        with pytest.raises(AuthError) as info:
            await checker.claims("garbage")
        assert (info.value.status, info.value.reason) == (401, "token_inactive")
    assert endpoint.calls == ["garbage"]
    clock.now += 6
    with pytest.raises(AuthError):
        await checker.claims("garbage")
    assert len(endpoint.calls) == 2


async def test_cache_is_bounded_and_concurrent_askers_share_one_call() -> None:
    clock = Clock()
    endpoint = Endpoint({f"t{i}": active(clock.now + 3600) for i in range(10)})
    checker = introspector(endpoint, clock, maxEntries=3)
    for i in range(10):
        await checker.claims(f"t{i}")
    assert len(checker) == 3
    endpoint.calls.clear()
    await asyncio.gather(*(checker.claims("t0") for _ in range(20)))
    assert endpoint.calls == ["t0"]


async def test_a_caller_leaving_does_not_fail_the_callers_sharing_its_call() -> None:
    # A client that gives up (and retries) while the issuer is slow: the retry waits on the
    # first request's call; the first request's end must not end the retry's wait with it.
    clock = Clock()
    release = asyncio.Event()
    calls: list[str] = []

    async def slow(request: httpx.Request) -> httpx.Response:
        calls.append("new")
        await release.wait()
        return httpx.Response(200, json=active(clock.now + 3600))

    checker = introspector(slow, clock)
    first = asyncio.create_task(checker.claims("new"))
    await asyncio.sleep(0.01)
    retry = asyncio.create_task(checker.claims("new"))
    await asyncio.sleep(0.01)
    first.cancel()
    await asyncio.sleep(0.01)
    release.set()
    assert (await retry)["sub"] == "svc"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert calls == ["new"]
    # The answer was kept: the next request with the token asks nobody.
    assert (await checker.claims("new"))["sub"] == "svc" and calls == ["new"]


async def test_calls_to_the_issuer_are_bounded_and_a_token_that_waits_too_long_is_a_503() -> None:
    # A flood of made-up tokens, each new to the cache: the issuer sees MAX_CALLS_IN_FLIGHT
    # calls at once, not one per request; a token whose turn does not come within the call
    # timeout is refused as when the issuer cannot be asked, and that refusal is not cached.
    clock = Clock()
    release = asyncio.Event()
    asked: list[str] = []

    async def slow(request: httpx.Request) -> httpx.Response:
        asked.append(dict(httpx.QueryParams(request.content.decode()))["token"])
        await release.wait()
        return httpx.Response(200, json=active(clock.now + 3600))

    checker = introspector(slow, clock, timeout="300ms")
    flood = [asyncio.create_task(checker.claims(f"made-up-{i}")) for i in range(MAX_CALLS_IN_FLIGHT + 8)]
    await asyncio.sleep(0.05)
    assert len(asked) == MAX_CALLS_IN_FLIGHT
    with pytest.raises(AuthError) as info:
        await flood[-1]  # its turn did not come within 300 ms
    assert (info.value.status, info.value.reason) == (503, "introspection_unavailable")
    release.set()
    answered = await asyncio.gather(*flood, return_exceptions=True)
    assert sum(isinstance(a, dict) for a in answered) == MAX_CALLS_IN_FLIGHT
    assert all(isinstance(a, AuthError) and a.status == 503 for a in answered[MAX_CALLS_IN_FLIGHT:])
    # Refused for want of a turn, not by the issuer: asked again once the queue is free.
    assert (await checker.claims(f"made-up-{MAX_CALLS_IN_FLIGHT}"))["sub"] == "svc"
    assert len(asked) == MAX_CALLS_IN_FLIGHT + 1


async def test_wrong_audience_and_issuer() -> None:
    clock = Clock()
    endpoint = Endpoint(
        {
            "other-aud": active(clock.now + 60, aud="someone"),
            "other-iss": active(clock.now + 60, iss="https://x"),
        }
    )
    checker = introspector(endpoint, clock)
    with pytest.raises(AuthError) as info:
        await checker.claims("other-aud")
    assert (info.value.status, info.value.reason) == (403, "wrong_audience")
    with pytest.raises(AuthError) as info:
        await checker.claims("other-iss")
    assert (info.value.status, info.value.reason) == (401, "wrong_issuer")


def test_claim_values() -> None:
    claims = {"scope": "a b", "groups": ["g1", 3], "realm_access": {"roles": ["admin"]}, "scp": ["x"]}
    assert claim_values(claims, "scope") == {"a", "b"}
    assert claim_values({"scp": ["x", "y"]}, "scope") == {"x", "y"}
    assert claim_values(claims, "groups") == {"g1"}
    assert claim_values(claims, "realm_access.roles") == {"admin"}
    assert claim_values(claims, "missing") == frozenset()


def test_roles_grant_and_first_allowing_role_gives_the_tier() -> None:
    roles = Roles(
        AuthorizationConfig.model_validate(
            {
                "roles": [
                    {
                        "name": "premium",
                        "routes": ["chat"],
                        "models": ["big"],
                        "tier": "gold",
                        "apiKeys": ["k"],
                    },
                    {"name": "basic", "routes": ["chat", "assist"], "tier": "free", "apiKeys": ["k"]},
                    {"name": "ops", "claims": [{"claim": "groups", "value": "ops"}]},
                ]
            }
        )
    )
    key = Principal("k", "apiKey", tier="silver", roles=roles.for_api_key("k"))
    assert key.roles == ("premium", "basic")
    assert roles.authorize(key, "/v1/chat/completions", "big").tier == "gold"
    assert roles.authorize(key, "/v1/chat/completions", "small").tier == "free"
    assert roles.authorize(key, "/assist", None).tier == "free"
    with pytest.raises(AuthError) as info:
        roles.authorize(key, "/ws", None)
    assert (info.value.status, info.value.reason) == (403, "route_not_allowed")
    ops = Principal("u", "jwt", tier="silver", roles=roles.for_claims({"groups": ["ops"]}))
    assert roles.authorize(ops, "/ws", "anything").tier == "silver"  # no tier on the role: its own
    with pytest.raises(AuthError) as info:
        roles.authorize(Principal("x", "jwt"), "/assist", None)
    assert info.value.reason == "no_role"


async def test_an_unreachable_endpoint_is_a_503_and_not_cached() -> None:
    clock = Clock()
    endpoint = Endpoint({"t": active(clock.now + 60)})

    def failing(request: httpx.Request) -> httpx.Response:
        # The first call fails (the issuer is down), the next ones are answered.
        return httpx.Response(500) if not endpoint.calls else endpoint(request)

    checker = introspector(failing, clock)
    with pytest.raises(AuthError) as info:
        await checker.claims("t")
    assert (info.value.status, info.value.reason) == (503, "introspection_unavailable")
    endpoint.calls.append("(the failed call)")
    assert (await checker.claims("t"))["sub"] == "svc"


def test_the_role_tier_selects_the_policy_tier(tmp_path: Path) -> None:
    """alice's key says tier gold; her role says tier trial (1 request a minute), and wins."""
    with FakeUpstream("openai") as fake:
        policy = {
            "policy": "default/p",
            "limits": {"requestsPerMinute": 100},
            "tiers": [{"name": "trial", "limits": {"requestsPerMinute": 1}}],
        }
        roles = {
            "roles": [
                {"name": "trial", "routes": ["assist"], "tier": "trial", "apiKeys": ["alice"]},
                {"name": "plain", "routes": ["assist"], "apiKeys": ["bob"]},
            ]
        }
        config = make_config(chain=[chain_entry(fake)], rate_limit=policy, auth={"authorization": roles})
        with InProcessRuntime(RuntimeFiles(tmp_path, config, default_credentials())) as runtime:

            def assist(key: str) -> httpx.Response:
                body = {"query": {"id": protocol.new_ulid(), "prompt": "hi"}}
                return httpx.post(f"{runtime.url}/assist", json=body, headers={"x-api-key": key}, timeout=20)

            first = assist("alice-secret-key")
            assert first.status_code == 200 and first.headers["ratelimit-limit"] == "1"
            assert assist("alice-secret-key").status_code == 429
            plain = assist("bob-secret-key")
            assert plain.status_code == 200 and plain.headers["ratelimit-limit"] == "100"
