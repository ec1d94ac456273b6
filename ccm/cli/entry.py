"""The `ccm` console script. `ccm statusline`, which Claude Code starts afresh every few hundred milliseconds, is
answered without importing click or the rest of ccm (`ccm.statusline` needs the standard library only); every other
command goes to the click group (`ccm.cli.main`)."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["statusline"] and not {"-h", "--help"} & set(sys.argv[2:]):
        from ccm.statusline import main as statusline

        raise SystemExit(statusline(sys.argv[2:]))
    from ccm.cli.main import main as cli

    cli()
