"""spec.sessions.postgres from the custom resource to the runtime: resolution, rendering, CLI.

The DSN is read from the Secret the agent names, lands in the bound Secret only (the ConfigMap
names its file), and a missing Secret blocks the agent without quoting anything it holds.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from pathlib import Path

import yaml
from click.testing import CliRunner

from agent_runtime.config import SESSIONS_POSTGRES_DSN_FILE, parse_config
from sentient_operator.build.children import config_map, credentials_secret
from sentient_operator.cli import scaffold
from sentient_operator.cli.dev import Upstreams, plan_agent_yaml
from sentient_operator.cli.main import cli
from tests.test_build_children import make_inputs, secret_data
from tests.test_handlers_references import Dicts, agent_spec, provider, reasons, run

DSN = "postgresql://bot:s3cret-pw@db.team.svc:5432/sessions?sslmode=require"
SESSIONS = {
    "store": "postgres",
    "ttl": "2h",
    "postgres": {
        "dsnSecretRef": {"name": "sessions-db", "key": "dsn"},
        "poolSize": 4,
        "schemaName": "agents",
        "tableName": "chat_sessions",
    },
}


def test_the_dsn_secret_is_resolved_and_watched() -> None:
    lookup = Dicts()
    lookup.providers[("team", "openai")] = provider(credentials=False)
    spec = agent_spec(sessions=SESSIONS)
    res = run(lookup, spec)
    assert reasons(res) == ["SecretNotFound"]
    assert "sessions PostgreSQL DSN" in res.problems[0].message
    lookup.secrets[("team", "sessions-db")] = {"other": DSN}
    res = run(lookup, spec)
    assert reasons(res) == ["SecretKeyNotFound"]
    assert all("s3cret-pw" not in p.message for p in res.problems)
    lookup.secrets[("team", "sessions-db")] = {"dsn": DSN}
    res = run(lookup, spec)
    assert res.ok and res.inputs is not None
    assert res.inputs.sessions_postgres_dsn == DSN
    assert "s3cret-pw" not in repr(res.inputs)


def test_the_dsn_goes_to_the_bound_secret_and_the_config_names_its_file() -> None:
    inputs = replace(make_inputs(sessions=SESSIONS), sessions_postgres_dsn=DSN)
    assert secret_data(credentials_secret(inputs))[SESSIONS_POSTGRES_DSN_FILE] == DSN
    rendered = config_map(inputs)["data"]["config.yaml"]
    assert "s3cret-pw" not in rendered and "db.team.svc" not in rendered
    config = parse_config(rendered)
    postgres = config.sessions.postgres
    assert config.sessions.store == "postgres" and postgres is not None
    assert (postgres.dsn_file, postgres.pool_size, postgres.schema_name, postgres.table_name) == (
        SESSIONS_POSTGRES_DSN_FILE,
        4,
        "agents",
        "chat_sessions",
    )
    assert config.sessions.ttl == "2h"


def test_init_with_postgres_sessions_validates_and_says_how_to_make_the_secret(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["init", "bot", "--sessions", "postgres", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "kubectl create secret generic bot-sessions-db --from-literal=dsn=" in result.output
    docs = list(yaml.safe_load_all((tmp_path / "agent.yaml").read_text()))
    sessions = docs[-1]["spec"]["sessions"]
    assert sessions["store"] == "postgres"
    assert sessions["postgres"]["dsnSecretRef"] == {"name": "bot-sessions-db", "key": "dsn"}
    checked = runner.invoke(cli, ["validate", str(tmp_path / "agent.yaml")])
    assert checked.exit_code == 0 and ": warning: " not in checked.output, checked.output


def test_validate_warns_of_a_dsn_that_is_not_a_url_without_showing_it(tmp_path: Path) -> None:
    docs = scaffold.agent_manifests("bot", sessions="postgres")
    bad = "host=db user=bot password=hunter2-pw"
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "bot-sessions-db"},
        "data": {"dsn": base64.b64encode(bad.encode()).decode()},
    }
    path = tmp_path / "agent.yaml"
    path.write_text(scaffold.dump_documents([secret, *docs]))
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if ": warning: " in line]
    assert len(warnings) == 1 and "not a postgresql:// URL" in warnings[0]
    assert "hunter2" not in result.output
    secret["data"] = {"dsn": base64.b64encode(DSN.encode()).decode()}
    path.write_text(scaffold.dump_documents([secret, *docs]))
    assert ": warning: " not in CliRunner().invoke(cli, ["validate", str(path)]).output


def test_dev_keeps_postgres_sessions_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(scaffold.dump_documents(scaffold.agent_manifests("bot", sessions="postgres")))
    plan = plan_agent_yaml(
        path,
        agent_name=None,
        upstreams=Upstreams(),
        keep_auth=False,
        port=18080,
        audit_key="k",
        env={"OPENAI_API_KEY": "sk-from-env"},
    )
    assert plan.config.sessions.store == "memory" and plan.config.sessions.postgres is None
    assert "sessions kept in memory (PostgreSQL is not used by dev)" in plan.notes
