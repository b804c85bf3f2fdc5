"""Rendering a chain with a load-balanced step: references resolved member by member, the runtime
config's steps and weights, one credential file per member, and a plain chain unchanged."""

from __future__ import annotations

from typing import Any

import yaml

from agent_runtime.config import parse_config, provider_credential_file
from sentient_operator.build import credentials_secret, render_config
from sentient_operator.references import Resolution, resolve
from tests.test_build_children import secret_data
from tests.test_handlers_references import Dicts, agent_spec, provider

KEYS = {"openai-a": "sk-key-a-SECRET", "openai-b": "sk-key-b-SECRET", "backup": "sk-backup-SECRET"}


def _lookup() -> Dicts:
    lookup = Dicts()
    for name, key in KEYS.items():
        lookup.providers[("team", name)] = provider()
        lookup.secrets[("team", f"sentient-provider-{name}")] = {"apiKey": key}
    return lookup


def _resolve(chain: list[dict[str, Any]]) -> Resolution:
    return resolve(
        name="a",
        namespace="team",
        uid="u",
        spec=agent_spec(llm={"chain": chain}),
        lookup=_lookup(),
        image="img",
        audit_key="k",
    )


BALANCED_CHAIN: list[dict[str, Any]] = [
    {
        "members": [
            {"providerRef": {"name": "openai-a"}, "weight": 3},
            {"providerRef": {"name": "openai-b"}},
        ],
        "strategy": "lowestLatency",
        "lowestLatency": {"halfLife": "4s", "probeInterval": "2s"},
    },
    {"providerRef": {"name": "backup"}, "model": "gpt-4o"},
]


def test_a_balanced_step_renders_its_members_weights_and_steps() -> None:
    res = _resolve(BALANCED_CHAIN)
    assert res.ok and res.inputs is not None
    # Status lists every member, in order.
    assert [c["provider"] for c in res.chain] == ["team/openai-a", "team/openai-b", "team/backup"]
    text, _ = render_config(res.inputs)
    config = parse_config(text)
    assert [(p.id, p.model, p.weight) for p in config.llm.chain] == [
        ("team/openai-a", "gpt-4o-mini", 3),
        ("team/openai-b", "gpt-4o-mini", 1),
        ("team/backup", "gpt-4o", None),
    ]
    assert config.llm.steps is not None
    assert [(s.size, s.strategy) for s in config.llm.steps] == [(2, "lowestLatency"), (1, "weight")]
    assert (config.llm.steps[0].latency_half_life, config.llm.steps[0].probe_interval) == ("4s", "2s")
    # One key file per member; the ConfigMap names them, the Secret holds them.
    assert config.llm.chain[1].credential_file == provider_credential_file("team", "openai-b")
    for key in KEYS.values():
        assert key not in text
    bound = secret_data(credentials_secret(res.inputs))
    assert {bound[provider_credential_file("team", n)] for n in KEYS} == set(KEYS.values())


def test_a_plain_chain_renders_without_steps_or_weights() -> None:
    res = _resolve([{"providerRef": {"name": "openai-a"}}, {"providerRef": {"name": "backup"}}])
    assert res.inputs is not None
    text, _ = render_config(res.inputs)
    llm = yaml.safe_load(text)["llm"]
    # Exactly the keys rendered before steps existed: no rollout of existing agents on upgrade.
    assert set(llm) == {"chain", "parameters", "revealProvider"}
    assert all("weight" not in entry for entry in llm["chain"])


def test_a_step_of_one_member_renders_a_step_of_size_one() -> None:
    res = _resolve([{"members": [{"providerRef": {"name": "openai-a"}}]}])
    assert res.inputs is not None
    config = parse_config(render_config(res.inputs)[0])
    assert config.llm.steps is not None and [s.size for s in config.llm.steps] == [1]
