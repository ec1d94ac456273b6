"""`ccm`: the command-line entry point.

Subcommands are imported only when invoked, so `ccm check` in CI never pays for the server stack (httpx, hypercorn,
tiktoken) and `ccm run` starts fast.
"""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute" of the click command
COMMANDS: dict[str, str] = {
    "check": "ccm.cli.check:check_command",
    "fmt": "ccm.cli.fmt:fmt",
    "table": "ccm.cli.table_cmd:table",
    "explain": "ccm.cli.explain:explain",
    "import": "ccm.cli.import_cmd:import_",
    "models": "ccm.cli.models_cmd:models",
    "run": "ccm.cli.serve:run",
    "code": "ccm.cli.serve:code",
    "init": "ccm.cli.init_cmd:init",
    "status": "ccm.cli.lifecycle:status",
    "stop": "ccm.cli.lifecycle:stop",
    "restart": "ccm.cli.lifecycle:restart",
    "env": "ccm.cli.serve:env",
    "keys": "ccm.cli.keys:keys",
    "credits": "ccm.cli.keys:credits",
    "usage": "ccm.cli.usage:usage",
    "billing": "ccm.cli.usage:billing",
    "export": "ccm.cli.usage:export",
    "db": "ccm.cli.database:db",
    "statusline": "ccm.cli.statusline_cmd:statusline",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ccm")
def main() -> None:
    """ccm routes Claude Code's requests to Anthropic, OpenAI-compatible and Gemini upstreams, as a route file says."""
