"""The response cache on real Redis: standalone (shared by two runtimes, TTL in Redis, an outage
is a miss), a three-master Redis Cluster (entries on every master) and Sentinel (a failover)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from agent_runtime.cache import build_cache
from agent_runtime.cache.entry import Entry
from agent_runtime.cache.redis import RedisBackend
from agent_runtime.config import CacheRuntimeConfig
from agent_runtime.metrics import REGISTRY
from agent_runtime.testing.control import FakeUpstream, run_fake
from tests.support.redis_cluster import (
    MASTER_NAME,
    RedisClusterSetup,
    redis_cluster_or_skip,
    redis_sentinel_or_skip,
)
from tests.support.redis_server import RedisServer, redis_or_skip
from tests.support.runtime import InProcessRuntime, RuntimeFiles, default_credentials
from tests.test_runtime_cache import HEADER, cached_config, chat, unique

URL_FILE = "cache-redis-url"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with run_fake("openai") as upstream:
        yield upstream


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with redis_or_skip() as server:
        yield server


def standalone(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"backend": "redis", "redis": {"mode": "standalone", "urlFile": URL_FILE}, **(extra or {})}


def test_two_runtimes_share_entries(tmp_path: Path, fake: FakeUpstream, redis_server: RedisServer) -> None:
    credentials = default_credentials({URL_FILE: redis_server.url})
    config = cached_config(fake, standalone())
    with (
        InProcessRuntime(RuntimeFiles(tmp_path / "a", config, credentials)) as a,
        InProcessRuntime(RuntimeFiles(tmp_path / "b", config, credentials)) as b,
    ):
        prompt = unique()
        before = fake.state.requests
        assert chat(a, prompt).headers[HEADER] == "miss"
        replica = chat(b, prompt)
        assert replica.headers[HEADER] == "hit"
        assert fake.state.requests == before + 1
        streamed = unique("streamed")
        assert chat(b, streamed, stream=True).headers[HEADER] == "miss"
        assert chat(a, streamed, stream=True).headers[HEADER] == "hit"


def test_ttl_is_kept_by_redis(tmp_path: Path, fake: FakeUpstream, redis_server: RedisServer) -> None:
    credentials = default_credentials({URL_FILE: redis_server.url})
    config = cached_config(fake, standalone({"ttl": "500ms", "keyPrefix": "ttl-test:"}))
    with InProcessRuntime(RuntimeFiles(tmp_path, config, credentials)) as rt:
        prompt = unique()
        chat(rt, prompt)
        with redis.Redis.from_url(redis_server.url) as client:
            keys = client.keys("ttl-test:*")
            assert len(keys) == 1 and keys[0].decode().startswith("ttl-test:{")
            assert 0 < client.pttl(keys[0]) <= 500
        assert chat(rt, prompt).headers[HEADER] == "hit"
        time.sleep(0.6)
        assert chat(rt, prompt).headers[HEADER] == "miss"


def test_an_unreachable_redis_is_a_miss_not_an_error(tmp_path: Path, fake: FakeUpstream) -> None:
    credentials = default_credentials({URL_FILE: "redis://127.0.0.1:1/0"})
    config = cached_config(fake, standalone())
    errors = REGISTRY.get_sample_value("sentient_cache_backend_errors_total", {"op": "get"}) or 0.0
    with InProcessRuntime(RuntimeFiles(tmp_path, config, credentials)) as rt:
        prompt = unique()
        for _ in range(2):
            response = chat(rt, prompt)
            assert response.status_code == 200 and response.headers[HEADER] == "miss"
    assert (
        REGISTRY.get_sample_value("sentient_cache_backend_errors_total", {"op": "get"}) or 0.0
    ) >= errors + 2


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterSetup]:
    with redis_cluster_or_skip() as setup:
        yield setup


def test_entries_spread_over_every_cluster_master(
    tmp_path: Path, fake: FakeUpstream, cluster: RedisClusterSetup
) -> None:
    cluster.flushall()
    config = cached_config(fake, {"backend": "redis", "redis": {"mode": "cluster", "nodes": cluster.nodes}})
    with InProcessRuntime(RuntimeFiles(tmp_path, config, default_credentials())) as rt:
        prompts = [unique(f"prompt {i}") for i in range(24)]
        assert {chat(rt, p).headers[HEADER] for p in prompts} == {"miss"}
        before = fake.state.requests
        assert {chat(rt, p).headers[HEADER] for p in prompts} == {"hit"}
        assert fake.state.requests == before
    assert all(count > 0 for count in cluster.keys_per_node().values())


async def test_sentinel_backend_follows_a_failover() -> None:
    password = "cache-sentinel-password"
    with redis_sentinel_or_skip(password) as setup:
        config = CacheRuntimeConfig.model_validate(
            {
                "backend": "redis",
                "redis": {
                    "mode": "sentinel",
                    "sentinels": setup.sentinel_addresses,
                    "masterName": MASTER_NAME,
                    "passwordFile": "pw",
                },
            }
        )
        cache = build_cache(config, lambda name: password if name == "pw" else None)
        assert cache is not None and isinstance(cache.backend, RedisBackend)
        entry = Entry(("hello ", "world"), (3, 2), "p", "m", "stop")
        await cache.store("before", entry)
        assert await cache.lookup("before") == entry
        with setup.data_client(setup.master) as master:
            assert master.wait(1, 2000) == 1
        old = await asyncio.get_running_loop().run_in_executor(None, setup.force_failover)
        await asyncio.get_running_loop().run_in_executor(None, setup.wait_for_new_master, old)
        # The first command after the promotion may fail (a miss); the cache then follows.
        deadline = time.monotonic() + 15
        while await cache.lookup("before") != entry:
            assert time.monotonic() < deadline, "the cache did not follow the new master"
            await asyncio.sleep(0.2)
        await cache.store("after", entry)
        assert await cache.lookup("after") == entry
        await cache.aclose()
