"""`ccm statusline` as a click command: for `ccm --help` and `ccm statusline --help`. The console script answers
`ccm statusline` itself, without click (`ccm.cli.entry`)."""

from __future__ import annotations

import click


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--url", default=None, help="The router (default: ANTHROPIC_BASE_URL when it is loopback, else "
              "http://127.0.0.1:2260).")
def statusline(url: str | None) -> None:
    """One line for Claude Code's statusLine: the rule, model and deployment that served this session's last
    request, its tokens and cost (reads Claude Code's status JSON on stdin; docs/statusline.md)."""
    from ccm.statusline import main

    raise SystemExit(main(["--url", url] if url else []))
