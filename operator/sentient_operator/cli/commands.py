"""Commands that talk to a cluster or a running agent (imported lazily by main)."""

from __future__ import annotations

import click

from sentient_operator.cli import status as status_mod
from sentient_operator.cli.errors import CliError
from sentient_operator.cli.main import cli


@cli.command()
@click.option("-n", "--namespace", help="Only this namespace (default: all namespaces).")
@click.option("-A", "--all-namespaces", is_flag=True, help="All namespaces (the default).")
@click.option(
    "-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table", show_default=True
)
@click.option("--context", help="kubeconfig context to use.")
def status(namespace: str | None, all_namespaces: bool, output: str, context: str | None) -> None:
    """Show agents: ready, replicas, the provider chain with each provider's state, endpoint.

    \b
    Examples:
      sentient status
      sentient status -n team-a -o yaml
    """
    try:
        agents, providers = status_mod.fetch(None if all_namespaces else namespace, context)
    except Exception as exc:
        reason = getattr(exc, "reason", None) or str(exc).splitlines()[0]
        raise CliError(f"cannot list agents from the cluster: {reason}") from exc
    click.echo(status_mod.render(status_mod.build_rows(agents, providers), output))
