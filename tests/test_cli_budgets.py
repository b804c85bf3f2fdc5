"""``sentient init --budget/--price`` and ``sentient validate``'s word on spend budgets."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import yaml
from click.testing import CliRunner

from agent_runtime.config import parse_config
from sentient_operator.api.v1alpha1 import LLMProviderSpec, RateLimitPolicySpec
from sentient_operator.build import ResolvedPolicy, render_config
from sentient_operator.cli.main import cli
from sentient_operator.cli.validate import check_files
from tests.support.spend import Caller, priced_chain
from tests.test_build_children import make_inputs


def test_init_with_a_budget_prices_the_model_and_passes_validate(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli, ["init", "thrifty", "--budget", "25", "--price", "0.15:0.60", "-o", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    checked = runner.invoke(cli, ["validate", str(tmp_path / "agent.yaml")])
    assert checked.exit_code == 0, checked.output
    assert "warning" not in checked.output.lower()
    docs = list(yaml.safe_load_all((tmp_path / "agent.yaml").read_text()))
    provider = next(d for d in docs if d["kind"] == "LLMProvider")
    policy = next(d for d in docs if d["kind"] == "RateLimitPolicy")
    assert provider["spec"]["pricing"] == {
        "currency": "USD",
        "models": [{"model": "gpt-4o-mini", "inputPerMillion": "0.15", "outputPerMillion": "0.60"}],
    }
    assert policy["spec"]["budgets"] == [{"name": "daily", "per": "agent", "currency": "USD", "perDay": "25"}]
    # What the operator renders from them.
    inputs = make_inputs()
    priced = replace(inputs.providers[0], spec=LLMProviderSpec.model_validate(provider["spec"]))
    policy_in = ResolvedPolicy("team", "p", RateLimitPolicySpec.model_validate(policy["spec"]))
    rendered = parse_config(render_config(replace(inputs, providers=[priced], policy=policy_in))[0])
    assert rendered.llm.chain[0].price is not None
    assert rendered.rate_limit is not None and rendered.rate_limit.budgets[0].per_day == "25"


def test_init_budget_needs_a_price(tmp_path: Path) -> None:
    runner = CliRunner()
    alone = runner.invoke(cli, ["init", "x", "--budget", "25", "-o", str(tmp_path)])
    assert alone.exit_code == 2 and "--price" in alone.output
    bad = runner.invoke(cli, ["init", "x", "--budget", "25", "--price", "cheap", "-o", str(tmp_path)])
    assert bad.exit_code == 2 and "INPUT:OUTPUT" in bad.output


def test_validate_warns_about_a_budget_no_provider_is_priced_in(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["init", "spendy", "-o", str(tmp_path)]).exit_code == 0
    path = tmp_path / "agent.yaml"
    docs = list(yaml.safe_load_all(path.read_text()))
    policy = next(d for d in docs if d["kind"] == "RateLimitPolicy")
    policy["spec"]["budgets"] = [{"name": "monthly", "currency": "EUR", "perMonth": "100"}]
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    _, problems, warnings = check_files([str(path)])
    assert problems == []
    assert [w.path for w in warnings] == ["spec.budgets[0]"]
    assert "EUR" in warnings[0].message and "'monthly'" in warnings[0].message


def test_status_shows_the_budget_usage_a_runtime_exports() -> None:
    import asyncio
    import json

    from agent_runtime import metrics
    from agent_runtime.config import RateLimitConfig
    from agent_runtime.limits import build_limiter
    from agent_runtime.limits.policy import ALLOW_ALL
    from sentient_operator.cli.budget_status import parse_budget_metrics
    from sentient_operator.cli.status import AgentRow, render

    config = RateLimitConfig.model_validate(
        {
            "policy": "ns/status",
            "limits": {},
            "budgets": [{"name": "status-test", "per": "apiKey", "perMonth": "7.5"}],
        }
    )
    chain = priced_chain("1000", "2000")

    async def spend() -> None:
        # 1000 output tokens at 2000 per million: 2.00 reserved, and kept (the cost is unknown).
        admission = await build_limiter(config, lambda _: None).admit_spend(
            ALLOW_ALL, Caller("team-key"), chain, 0, 1000
        )
        assert admission.allowed and admission.spend is not None
        admission.spend.meter.unknown = True
        await admission.settle(None)

    asyncio.run(spend())
    uses = [u for u in parse_budget_metrics(metrics.exposition().decode()) if u.budget == "status-test"]
    assert [(u.window, u.subject, u.spent, u.limit, u.remaining, u.currency) for u in uses] == [
        ("month", "team-key", 2.0, 7.5, 5.5, "USD")
    ]
    row = AgentRow("team", "helper", "True", "", "1/1", [], "http://helper.team:8080")
    table = render([row], "table", [uses])
    assert "status-test" in table and "USD 2.00" in table and "5.50" in table
    assert "(metrics unavailable: Forbidden)" in render([row], "table", ["metrics unavailable: Forbidden"])
    data = json.loads(render([row], "json", [uses]))
    assert data[0]["budgets"][0]["remaining"] == 5.5
    assert "budgets" not in json.loads(render([row], "json"))[0]
