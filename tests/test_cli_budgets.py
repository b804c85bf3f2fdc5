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
