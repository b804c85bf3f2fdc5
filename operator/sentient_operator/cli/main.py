"""Entry point of the ``sentient`` command."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from sentient_operator.cli import scaffold, templates
from sentient_operator.cli.commands import audit, chat, dev, status
from sentient_operator.cli.errors import CliError
from sentient_operator.cli.validate import check_files
from sentient_operator.version import package_version


class Group(click.Group):
    """Turns any error into one clear line; the trace only with ``--debug``."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            raise SystemExit(130) from None
        except Exception as exc:
            if ctx.meta.get("debug"):
                traceback.print_exc()
            message = str(exc) if isinstance(exc, CliError) else f"{type(exc).__name__}: {exc}"
            click.secho(f"error: {message}", fg="red", err=True)
            if not ctx.meta.get("debug") and not isinstance(exc, CliError):
                click.echo("(run with --debug for the trace)", err=True)
            raise SystemExit(exc.exit_code if isinstance(exc, CliError) else 1) from None


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_version(), "--version", prog_name="sentient", message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, help="Show full traces on errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """sentient: build, run and inspect LLM agents on Kubernetes.

    \b
    Examples:
      sentient init --provider openai --source secret my-agent
      sentient validate agent.yaml
      sentient dev agent.yaml --fake
      sentient chat default/my-agent -p "hello"
      sentient status -n default
    """
    ctx.meta["debug"] = debug


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-q", "--quiet", is_flag=True, help="Print only problems.")
def validate(files: tuple[str, ...], quiet: bool) -> None:
    """Validate manifests offline with the same rules as the CRDs.

    \b
    Exit code 1 when any document has a problem; each problem is printed as
    FILE:LINE: FIELD.PATH: MESSAGE. Warnings (valid, but likely not what you
    mean: memory limits or sessions with several workers) are printed as
    FILE:LINE: FIELD.PATH: warning: MESSAGE and do not fail.

    \b
    Examples:
      sentient validate agent.yaml
      sentient validate examples/*.yaml
    """
    count, problems, warnings = check_files(list(files))
    for problem in problems:
        click.echo(str(problem), err=True)
    for warning in warnings:
        click.echo(f"{warning.file}:{warning.line}: {warning.path}: warning: {warning.message}", err=True)
    if problems:
        raise SystemExit(1)
    if not quiet:
        click.echo(f"ok: {count} document(s) in {len(files)} file(s) are valid")


@cli.command()
@click.argument("name", required=False)
@click.option(
    "--provider",
    type=click.Choice(["openai", "anthropic", "openai-compatible"]),
    help="Upstream wire protocol.",
)
@click.option(
    "--source",
    type=click.Choice(["secret", "vault", "aws", "azure", "none"]),
    help="Where the provider's API key comes from.",
)
@click.option("--model", help="Default model of the provider.")
@click.option("--endpoint", help="Base URL of the provider's API.")
@click.option("--custom", is_flag=True, help="Scaffold a custom-agent project (class, test, Dockerfile).")
@click.option(
    "--image",
    default=None,
    help="Image of a custom agent [default: registry.example.com/NAME:0.1.0].",
)
@click.option(
    "--framework",
    type=click.Choice(list(templates.FRAMEWORKS)),
    default="none",
    show_default=True,
    help="With --custom: a host web app (FastAPI, Flask, Django) that mounts the agent.",
)
@click.option(
    "--sdk",
    type=click.Choice(list(templates.SDKS)),
    default="sentient",
    show_default=True,
    help="With --custom: the agent's SDK (sentient-agent-framework: the Sentient Agent Framework's).",
)
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="Directory to write the files into (created if missing).",
)
@click.option(
    "--guardrails",
    is_flag=True,
    help="Add starter guardrails (size limit, injection check, secret keys and personal data masked).",
)
@click.option(
    "--tracing",
    "tracing",
    metavar="URL",
    default=None,
    help="Send OpenTelemetry traces to this OTLP/HTTP collector (e.g. http://otel-collector:4318).",
)
@click.option(
    "--audit-sink",
    type=click.Choice(["syslog", "splunk"]),
    help="Ship the audit log to a SIEM: syslog over TLS (RFC 5425) or Splunk HEC (docs/audit.md).",
)
@click.option(
    "--keys",
    type=click.IntRange(1, 16),
    default=1,
    show_default=True,
    help="Spread the agent over this many API keys: one LLMProvider per key, one load-balanced chain step.",
)
@click.option(
    "--balance",
    type=click.Choice(["weight", "leastOutstanding", "lowestLatency"]),
    default=None,
    help="With --keys N: how the step spreads requests [default: weight] (docs/load-balancing.md).",
)
@click.option(
    "--sessions",
    type=click.Choice(["memory", "redis", "postgres"]),
    default="memory",
    show_default=True,
    help="Where conversations are kept: memory (per replica), redis or postgres (shared).",
)
@click.option(
    "--cache",
    is_flag=True,
    help="Turn on the response cache (identical requests answered from memory for 10 minutes).",
)
@click.option(
    "--budget",
    "budget",
    metavar="AMOUNT",
    help="Cap the agent's spend per UTC day (e.g. 50); needs --price (docs/budgets.md).",
)
@click.option(
    "--price",
    "price",
    metavar="IN:OUT",
    help="With --budget: the default model's price per million input:output tokens, e.g. 2.50:10.00.",
)
@click.option(
    "--currency", default="USD", show_default=True, help="With --budget: currency of price and budget."
)
@click.option(
    "--oidc-issuer",
    default=None,
    metavar="URL",
    help="Accept OAuth2 / OIDC access tokens of this issuer (audience: the agent's name) and add "
    "starter roles (docs/auth.md).",
)
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def init(
    name: str | None,
    provider: str | None,
    source: str | None,
    model: str | None,
    endpoint: str | None,
    custom: bool,
    image: str | None,
    framework: str,
    sdk: str,
    output: str,
    guardrails: bool,
    audit_sink: str | None,
    keys: int,
    balance: str | None,
    sessions: str,
    cache: bool,
    budget: str | None,
    price: str | None,
    currency: str,
    oidc_issuer: str | None,
    tracing: str | None,
    force: bool,
) -> None:
    """Scaffold an agent.yaml, or a whole custom-agent project with --custom.

    Asks for what is missing when run in a terminal.

    \b
    Examples:
      sentient init my-agent --provider anthropic --source vault
      sentient init my-agent --guardrails
      sentient init my-agent --audit-sink splunk
      sentient init my-agent --keys 3 --balance leastOutstanding
      sentient init my-agent --sessions postgres
      sentient init my-agent --cache
      sentient init my-agent --budget 50 --price 0.15:0.60
      sentient init my-agent --oidc-issuer https://login.example.com/realms/acme
      sentient init my-agent --tracing http://otel-collector.monitoring:4318
      sentient init my-agent --custom --image ghcr.io/acme/my-agent:1.0 -o my-agent/
      sentient init my-agent --custom --framework fastapi -o my-agent/
      sentient init my-agent --custom --sdk sentient-agent-framework -o my-agent/
    """
    if not custom and (framework != "none" or sdk != "sentient"):
        raise CliError("--framework and --sdk go with --custom", exit_code=2)
    if balance is not None and keys < 2:
        raise CliError("--balance goes with --keys N (N of 2 or more)", exit_code=2)
    starter_budget: scaffold.StarterBudget | None = None
    if budget is not None or price is not None:
        if budget is None or price is None:
            raise CliError(
                "--budget and --price go together (e.g. --budget 50 --price 0.15:0.60)", exit_code=2
            )
        try:
            starter_budget = scaffold.StarterBudget.parse(budget, price, currency)
        except ValueError as exc:
            raise CliError(str(exc), exit_code=2) from None
    interactive = sys.stdin.isatty()
    ask: Callable[..., Any] = click.prompt
    if name is None:
        if not interactive:
            raise CliError("NAME is required (e.g. sentient init my-agent)", exit_code=2)
        name = str(ask("Agent name", default="my-agent"))
    if provider is None:
        provider = (
            str(
                ask(
                    "Provider",
                    type=click.Choice(["openai", "anthropic", "openai-compatible"]),
                    default="openai",
                )
            )
            if interactive
            else "openai"
        )
    if source is None:
        source = (
            str(
                ask(
                    "Credential source",
                    type=click.Choice(["secret", "vault", "aws", "azure", "none"]),
                    default="secret",
                )
            )
            if interactive
            else "secret"
        )
    if source == "none" and provider != "openai-compatible":
        raise CliError(
            f"--source none needs --provider openai-compatible: {provider} requires an API key", exit_code=2
        )
    out = Path(output)
    if custom:
        image = image or f"registry.example.com/{name}:0.1.0"
        files = scaffold.custom_agent_files(name, image, framework, sdk)  # type: ignore[arg-type]
        steps = scaffold.custom_next_steps(name, image, out, framework)  # type: ignore[arg-type]
    else:
        docs = scaffold.agent_manifests(
            name,
            provider,  # type: ignore[arg-type]
            source,  # type: ignore[arg-type]
            model=model,
            endpoint=endpoint,
            guardrails=guardrails,
            keys=keys,
            balance=balance or "weight",
            sessions=sessions,  # type: ignore[arg-type]
            cache=cache,
            budget=starter_budget,
            oidc_issuer=oidc_issuer,
            tracing=tracing,
            audit_sink=audit_sink,  # type: ignore[arg-type]
        )
        steps = [
            *scaffold.provider_key_steps(name, provider, source, keys),  # type: ignore[arg-type]
            *scaffold.sessions_steps(name, sessions),  # type: ignore[arg-type]
            *(scaffold.audit_sink_steps(name, audit_sink) if audit_sink else []),  # type: ignore[arg-type]
            f"sentient validate {out / 'agent.yaml'}",
            f"kubectl apply -f {out / 'agent.yaml'}",
            f"kubectl wait --for=condition=Ready sentientagent/{name}",
            f"sentient chat default/{name} -p hello   # with SENTIENT_API_KEY = the caller key "
            f"in Secret {name}-callers (key {scaffold.CALLER_KEY_ID})",
        ]
        files = {"agent.yaml": scaffold.dump_documents(docs, header=scaffold.manifest_header(steps))}
    existing = [p for p in files if (out / p).exists()]
    if existing and not force:
        raise CliError(f"{', '.join(str(out / p) for p in existing)} exist(s); use --force to overwrite")
    out.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        (out / rel).write_text(text)
        click.echo(f"wrote {out / rel}")
    click.echo("next:")
    for step in steps:
        click.echo(f"  {step}")


# Every command is attached here, where the group is defined: the command set never depends on
# which module happened to be imported first.
for _command in (status, chat, dev, audit):
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="sentient")


if __name__ == "__main__":
    main()
