"""OIDC and roles in the API and the CLI: rendered into the runtime config (the introspection
client secret bound, never inlined), ``sentient init --oidc-issuer``, ``sentient validate`` warnings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from agent_runtime.config import OIDC_CLIENT_SECRET_FILE, parse_config
from sentient_operator.build import render_config
from sentient_operator.build.children import credentials_data
from sentient_operator.cli import scaffold
from sentient_operator.cli.main import cli
from tests.test_build_children import make_inputs

CLIENT_SECRET = "introspection-client-secret-value"
AUTH: dict[str, Any] = {
    "apiKeys": {"secretRef": {"name": "keys"}},
    "oidc": {
        "issuer": "https://login.example.com/realms/team",
        "audiences": ["helper.team"],
        "introspection": {
            "clientID": "helper",
            "clientSecretRef": {"name": "oidc", "key": "secret"},
            "cacheTTL": "20s",
        },
    },
    "authorization": {
        "roles": [
            {
                "name": "service",
                "routes": ["chat"],
                "models": ["gpt-4o-mini"],
                "tier": "gold",
                "claims": [{"claim": "scope", "value": "helper.chat"}],
            },
            {"name": "reader", "apiKeys": ["alice"]},
        ]
    },
}


def test_oidc_and_roles_are_rendered_with_the_secret_bound_not_inlined() -> None:
    inputs = replace(make_inputs(auth=AUTH), oidc_client_secret=CLIENT_SECRET)
    text, _ = render_config(inputs)
    assert CLIENT_SECRET not in text
    auth = parse_config(text).auth
    assert auth.oidc is not None and auth.oidc.introspection is not None
    assert auth.oidc.issuer == "https://login.example.com/realms/team"
    assert auth.oidc.jwks_url is None  # found through discovery at run time
    assert auth.oidc.introspection.client_secret_file == OIDC_CLIENT_SECRET_FILE
    assert auth.oidc.introspection.cache_ttl == "20s"
    assert auth.authorization is not None
    assert [(r.name, r.routes, r.tier, r.api_keys) for r in auth.authorization.roles] == [
        ("service", ["chat"], "gold", []),
        ("reader", [], None, ["alice"]),
    ]
    assert credentials_data(inputs)[OIDC_CLIENT_SECRET_FILE] == CLIENT_SECRET


def test_without_oidc_nothing_changes() -> None:
    auth = parse_config(render_config(make_inputs())[0]).auth
    assert auth.oidc is None and auth.authorization is None
    assert OIDC_CLIENT_SECRET_FILE not in credentials_data(make_inputs())


def test_init_with_oidc_passes_validate_and_renders(tmp_path: Path) -> None:
    runner = CliRunner()
    issuer = "https://login.example.com/realms/acme"
    result = runner.invoke(cli, ["init", "helper", "--oidc-issuer", issuer, "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    checked = runner.invoke(cli, ["validate", str(tmp_path / "agent.yaml")])
    assert checked.exit_code == 0, checked.output
    assert ": warning: " not in checked.output, checked.output
    agent = list(yaml.safe_load_all((tmp_path / "agent.yaml").read_text()))[-1]
    assert agent["spec"]["auth"]["oidc"] == {"issuer": issuer, "audiences": ["helper"]}
    assert agent["spec"]["auth"]["authorization"] == scaffold.starter_authorization("helper")
    rendered = parse_config(render_config(make_inputs(auth=agent["spec"]["auth"]))[0]).auth
    assert rendered.authorization is not None and rendered.oidc is not None


def test_validate_warns_of_roles_naming_missing_keys_or_tiers(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    text = (Path(__file__).resolve().parents[1] / "examples" / "oidc-roles.yaml").read_text()
    path.write_text(
        text.replace("apiKeys: [analyst]", "apiKeys: [analyst, nobody]").replace("tier: batch", "tier: gold")
    )
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if ": warning: " in line]
    assert len(warnings) == 2, result.output
    assert any("API key 'nobody', which Secret team-a-callers does not hold" in w for w in warnings)
    assert any("tier 'gold', which RateLimitPolicy team-a-limits does not define" in w for w in warnings)
