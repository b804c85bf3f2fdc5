"""Version skew between the operator and the runtime: the runtime owns its config schema.

A runtime must start on a config rendered by a newer operator (fields it does not know are ignored
with a warning) and on one rendered by an older operator (test data committed from that version),
and must still refuse a wrong value in a field it knows.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
import yaml
from pydantic import ValidationError

from agent_runtime.config import CONFIG_VERSION, dump_config, parse_config
from tests.support.runtime import RuntimeFiles, RuntimeProcess, default_credentials, free_ports, make_config

DATA = Path(__file__).parent / "data"
OLD_CONFIG = DATA / "runtime-config-before-configversion.yaml"

# Fields a future operator might render, at every nesting level the schema has.
UNKNOWN_PATHS = [
    "futureTopLevel",
    "agent.avatar",
    "llm.chain[0].timeouts.keepalive",
    "llm.chain[0].tls.minVersion",
    "llm.parameters.seed",
    "auth.mtls",
    "sessions.encryption",
    "server.maxConnections",
]


def _with_unknown_fields(text: str) -> str:
    data = yaml.safe_load(text)
    data["futureTopLevel"] = {"anything": [1, 2]}
    data["agent"]["avatar"] = "https://example.org/a.png"
    data["llm"]["chain"][0].setdefault("timeouts", {})["keepalive"] = "5s"
    data["llm"]["chain"][0].setdefault("tls", {})["minVersion"] = "1.3"
    data["llm"].setdefault("parameters", {})["seed"] = 7
    data["auth"]["mtls"] = {"caFile": "ca.pem"}
    data["sessions"] = {**data.get("sessions", {}), "encryption": "aes"}
    data["server"]["maxConnections"] = 100
    return yaml.safe_dump(data)


def test_unknown_fields_at_any_depth_are_ignored_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    text = _with_unknown_fields(dump_config(make_config()))
    with caplog.at_level(logging.WARNING, logger="agent_runtime.config"):
        config = parse_config(text)
    warnings = [r.getMessage() for r in caplog.records if r.name == "agent_runtime.config"]
    assert len(warnings) == 1
    for path in UNKNOWN_PATHS:
        assert path in warnings[0]
    # Dropped: they neither come back in a dump nor make two equal configs differ.
    assert config == make_config()
    assert "keepalive" not in dump_config(config)


def test_known_fields_stay_strict() -> None:
    data = yaml.safe_load(dump_config(make_config()))
    for path, bad in (
        (("server", "port"), "8080"),  # a string is not coerced to an int
        (("llm", "chain", 0, "timeouts"), {"connect": "soon"}),
        (("llm", "chain", 0, "type"), "openai-ish"),
        (("auth", "anonymous"), "yes"),
    ):
        broken = yaml.safe_load(yaml.safe_dump(data))
        target = broken
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = bad
        with pytest.raises(ValidationError):
            parse_config(yaml.safe_dump(broken))


def test_a_newer_config_version_loads_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    data = yaml.safe_load(dump_config(make_config()))
    data["configVersion"] = CONFIG_VERSION + 1
    with caplog.at_level(logging.WARNING, logger="agent_runtime.config"):
        config = parse_config(yaml.safe_dump(data))
    assert config.config_version == CONFIG_VERSION + 1
    assert any("newer than this runtime" in r.getMessage() for r in caplog.records)


def test_a_config_rendered_by_the_previous_version_loads() -> None:
    text = OLD_CONFIG.read_text()
    assert "configVersion" not in yaml.safe_load(text)
    config = parse_config(text)
    assert config.config_version == 1
    first, second = config.llm.chain
    assert (first.id, first.type, first.timeouts.first_token, first.retry.retry_on) == (
        "team/openai",
        "openai",
        "20s",
        ["429", "5xx"],
    )
    assert first.limits is not None and first.limits.tokens_per_minute == 200000
    assert second.tls.ca_file == "provider.team.claude.ca.pem"
    assert config.rate_limit is not None and config.rate_limit.count_by == "user"
    assert config.rate_limit.tiers[0].limits.requests_per_minute == 600
    assert config.auth.jwt is not None and config.auth.jwt.tier_claim == "plan"
    assert (config.sessions.store, config.sessions.ttl) == ("redis", "2h")
    # What the current operator renders for the same agent says which schema it is.
    assert f"configVersion: {CONFIG_VERSION}" in dump_config(config)


def test_the_runtime_starts_on_a_config_with_unknown_fields(tmp_path: Path) -> None:
    port, metrics_port = free_ports(2)
    config = make_config(port=port, metrics_port=metrics_port)
    files = RuntimeFiles(tmp_path, config, default_credentials())
    files.config_dir.write({"config.yaml": _with_unknown_fields(dump_config(config))})
    log_path = tmp_path / "runtime.log"
    with RuntimeProcess(files, log_path) as runtime:
        response = httpx.get(f"{runtime.url}/live", timeout=5)
        assert response.status_code == 200
    output = log_path.read_text()
    assert "ignoring fields this runtime does not know" in output
    assert "llm.chain[0].timeouts.keepalive" in output


def _rate_limit(redis: dict[str, object]) -> dict[str, object]:
    return {
        "policy": "ns/p",
        "limits": {"requestsPerMinute": 5},
        "backend": {"type": "redis", "redis": redis},
    }


@pytest.mark.parametrize(
    ("redis", "fragment"),
    [
        ({"mode": "cluster"}, "cluster mode needs at least one seed node"),
        ({"mode": "sentinel", "sentinels": ["s:26379"]}, "sentinel mode needs sentinels and masterName"),
        ({"mode": "standalone"}, "standalone mode needs urlFile"),
        ({"mode": "cluster", "nodes": ["no-port"]}, "nodes.0"),
        ({"mode": "ring", "nodes": ["a:1"]}, "mode"),
    ],
)
def test_redis_connections_are_checked(redis: dict[str, object], fragment: str) -> None:
    data = yaml.safe_load(dump_config(make_config()))
    data["rateLimit"] = _rate_limit(redis)
    with pytest.raises(ValidationError) as info:
        parse_config(yaml.safe_dump(data))
    assert fragment in str(info.value)


def test_redis_connections_parse_and_a_url_file_is_standalone() -> None:
    data = yaml.safe_load(dump_config(make_config()))
    data["rateLimit"] = _rate_limit(
        {
            "mode": "sentinel",
            "sentinels": ["s-0:26379", "[fd00::1]:26379"],
            "masterName": "m",
            "passwordFile": "pw",
        }
    )
    data["sessions"] = {"store": "redis", "redisUrlFile": "sessions-redis-url"}
    config = parse_config(yaml.safe_dump(data))
    assert config.rate_limit is not None
    connection = config.rate_limit.backend.connection()
    assert connection is not None and connection.master_name == "m" and connection.password_file == "pw"
    standalone = config.sessions.connection()
    assert standalone is not None and (standalone.mode, standalone.url_file) == (
        "standalone",
        "sessions-redis-url",
    )
    data["rateLimit"]["backend"]["keyPrefix"] = "a{b}:"
    with pytest.raises(ValidationError):
        parse_config(yaml.safe_dump(data))
