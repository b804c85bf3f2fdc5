"""``sentient init --keys N --balance S`` and ``sentient validate`` on load-balanced chain steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from sentient_operator.cli import scaffold
from sentient_operator.cli.dev import Upstreams, plan_agent_yaml
from sentient_operator.cli.main import cli
from sentient_operator.cli.status import build_rows, render


@pytest.mark.parametrize("strategy", ["weight", "leastOutstanding", "lowestLatency"])
def test_init_spreads_over_several_keys_and_passes_validate(tmp_path: Path, strategy: str) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["init", "lb", "--keys", "3", "--balance", strategy, "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    # One Secret to create per key, each from its own variable.
    for i in (1, 2, 3):
        assert f"kubectl create secret generic lb-openai-{i}-api-key" in result.output
        assert f"$OPENAI_API_KEY_{i}" in result.output
    docs = list(yaml.safe_load_all((tmp_path / "agent.yaml").read_text()))
    providers = [d for d in docs if d["kind"] == "LLMProvider"]
    assert [p["metadata"]["name"] for p in providers] == ["lb-openai-1", "lb-openai-2", "lb-openai-3"]
    assert len({str(p["spec"]["credentials"]) for p in providers}) == 3
    (step,) = docs[-1]["spec"]["llm"]["chain"]
    assert step == {
        "members": [{"providerRef": {"name": f"lb-openai-{i}"}} for i in (1, 2, 3)],
        "strategy": strategy,
    }
    checked = runner.invoke(cli, ["validate", str(tmp_path / "agent.yaml")])
    assert checked.exit_code == 0 and ": warning: " not in checked.output, checked.output


def test_init_balance_needs_several_keys(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["init", "lb", "--balance", "weight", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "--keys" in result.output


def test_validate_warns_when_members_read_the_same_credential(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["init", "lb", "--keys", "2", "-o", str(tmp_path)]).exit_code == 0
    path = tmp_path / "agent.yaml"
    path.write_text(path.read_text().replace("name: lb-openai-2-api-key", "name: lb-openai-1-api-key"))
    result = runner.invoke(cli, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    (warning,) = [line for line in result.output.splitlines() if ": warning: " in line]
    assert (
        "spec.llm.chain[0].members: warning: LLMProviders lb-openai-1 and lb-openai-2 read the same"
        in warning
    )


def test_validate_refuses_a_step_with_both_shapes(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["init", "lb", "--keys", "2", "-o", str(tmp_path)]).exit_code == 0
    path = tmp_path / "agent.yaml"
    path.write_text(
        path.read_text().replace(
            "    - members:\n", "    - providerRef: {name: lb-openai-1}\n      members:\n"
        )
    )
    result = runner.invoke(cli, ["validate", str(path)])
    assert result.exit_code != 0 and "set exactly one of providerRef and members" in result.output, (
        result.output
    )


def test_dev_plans_a_balanced_agent_against_the_fakes(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        scaffold.dump_documents(scaffold.agent_manifests("lb", keys=2, balance="leastOutstanding"))
    )
    upstreams = Upstreams(openai="http://127.0.0.1:9/v1")
    plan = plan_agent_yaml(
        path, agent_name=None, upstreams=upstreams, keep_auth=False, port=18080, audit_key="k", env={}
    )
    assert [(p.id, p.endpoint) for p in plan.config.llm.chain] == [
        ("default/lb-openai-1", "http://127.0.0.1:9/v1"),
        ("default/lb-openai-2", "http://127.0.0.1:9/v1"),
    ]
    assert plan.config.llm.steps is not None
    assert [(s.size, s.strategy) for s in plan.config.llm.steps] == [(2, "leastOutstanding")]


def test_status_shows_the_members_of_a_balanced_step() -> None:
    ready = {"conditions": [{"type": "Ready", "status": "True", "reason": "Synced"}]}
    providers = [{"metadata": {"namespace": "team", "name": n}, "status": ready} for n in ("a", "b", "c")]
    chain = [
        {"members": [{"providerRef": {"name": "a"}}, {"providerRef": {"name": "b"}}]},
        {"providerRef": {"name": "c"}},
    ]
    agent = {"metadata": {"namespace": "team", "name": "lb"}, "spec": {"llm": {"chain": chain}}, "status": {}}
    rows = build_rows([agent], providers)
    assert [(c.provider, c.step) for c in rows[0].chain] == [("a", 0), ("b", 0), ("c", None)]
    assert "a(Ready) | b(Ready) -> c(Ready)" in render(rows, "table")
    as_json = json.loads(render(rows, "json"))[0]["chain"]
    assert [link.get("step") for link in as_json] == [0, 0, None] and "step" not in as_json[2]
