"""`ccm usage`, `ccm billing`, `ccm export`: what was used and what it cost, from the ledger.

    ccm usage   [--key K] [--since T] [--until T] [--by key|model|provider|rule|session|day|hour]
                [--format table|csv|json]
    ccm billing [--key K] [--since T] [--until T] [--period day|week|month] [--format table|csv|json]
    ccm export  [--key K] [--since T] [--until T] [--format csv|json|jsonl] [--output FILE]

T is an ISO date or time (`2026-05-01`, `2026-05-01T12:00Z`) or a time ago (`30m`, `24h`, `7d`, `2w`); `--since`
defaults to the beginning, `--until` to now. `--key (local)` is the local caller. `export` streams every row, in
constant memory, to stdout or `--output`.
"""

from __future__ import annotations

import csv
import io
import sys
from decimal import Decimal
from typing import IO, Any

import click
import orjson

from ccm.cli.database import database_url, db_option, ledger_errors, run
from ccm.ledger.errors import BadTime
from ccm.ledger.money import format_usd, to_decimal
from ccm.ledger.reports import BY, COUNTS, Bill, Line, check_by
from ccm.ledger.times import PERIODS, Micros, now, parse_instant

key_option = click.option("--key", metavar="NAME", help="One key (`(local)`: the local caller).")
since_option = click.option("--since", metavar="T", help="From (ISO date/time, or 7d, 24h, 30m ago).")
until_option = click.option("--until", metavar="T", help="Until (default: now).")


def window(since: str | None, until: str | None) -> tuple[Micros, Micros]:
    end = parse_instant(until) if until is not None else now() + 1
    start = parse_instant(since) if since is not None else 0
    if start >= end:
        raise BadTime(f"--since {since} is not before --until {until or 'now'}")
    return start, end


_HEAD = ("requests", "errors", "input", "output", "cache_write_5m", "cache_write_1h", "cache_read", "web_search",
         "upstream_usd", "charged_usd")


def _line(line: Line) -> list[Any]:
    return [line.requests, line.errors, *(line.tokens[c] for c in COUNTS), to_decimal(line.upstream),
            to_decimal(line.charged)]


def _table(rows: list[list[Any]], head: list[str]) -> str:
    cells = [head] + [[format_usd(int(v.scaleb(9))) if isinstance(v, Decimal) else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
                     for r in cells)


def _plain(value: Any) -> Any:
    """Dollars as exact decimal text without trailing zeros ("0.0375"); anything else as it is."""
    return f"{value.normalize():f}" if isinstance(value, Decimal) else value


def _emit(rows: list[list[Any]], head: list[str], output: str) -> None:
    if output == "json":
        click.echo(orjson.dumps([dict(zip(head, map(_plain, row), strict=True)) for row in rows],
                                option=orjson.OPT_INDENT_2).decode())
    elif output == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(head)
        writer.writerows([list(map(_plain, row)) for row in rows])
        click.echo(buffer.getvalue(), nl=False)
    else:
        click.echo(_table(rows, head))


@click.command()
@key_option
@since_option
@until_option
@click.option("--by", metavar="|".join(BY), help="Group by this (default: one total line).")
@click.option("--format", "output", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@db_option
@ledger_errors
def usage(key: str | None, since: str | None, until: str | None, by: str | None, output: str,
          db: str | None) -> None:
    """Requests, tokens and cost, grouped."""
    start, end = window(since, until)
    grouping = check_by(by)
    from ccm.ledger.ledger import opened
    from ccm.ledger.reports import usage as report

    async def work() -> list[Line]:
        async with opened(database_url(db), create=False) as ledger:
            return await report(ledger.store, since=start, until=end, by=grouping, key=key)

    lines = run(work())
    _emit([[line.group, *_line(line)] for line in lines], [by or "total", *_HEAD], output)


@click.command()
@key_option
@since_option
@until_option
@click.option("--period", type=click.Choice(PERIODS), default="month", show_default=True)
@click.option("--format", "output", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@db_option
@ledger_errors
def billing(key: str | None, since: str | None, until: str | None, period: str, output: str, db: str | None) -> None:
    """Per key per period: upstream cost, markup, charged."""
    start, end = window(since, until)
    from ccm.ledger.ledger import opened
    from ccm.ledger.reports import billing as report

    async def work() -> list[Bill]:
        async with opened(database_url(db), create=False) as ledger:
            return await report(ledger.store, since=start, until=end, period=period, key=key)  # type: ignore[arg-type]

    bills = run(work())
    rows = [[b.key, b.period, b.requests, to_decimal(b.upstream), to_decimal(b.markup), to_decimal(b.charged)]
            for b in bills]
    _emit(rows, ["key", "period", "requests", "upstream_usd", "markup_usd", "charged_usd"], output)


@click.command()
@key_option
@since_option
@until_option
@click.option("--format", "output", type=click.Choice(["csv", "json", "jsonl"]), default="csv", show_default=True)
@click.option("--output", "path", type=click.Path(dir_okay=False, writable=True), help="A file (default: stdout).")
@db_option
@ledger_errors
def export(key: str | None, since: str | None, until: str | None, output: str, path: str | None,
           db: str | None) -> None:
    """Every usage row, streamed (any size, constant memory)."""
    start, end = window(since, until)
    from ccm.ledger.ledger import opened

    async def work(sink: IO[bytes]) -> int:
        from ccm.ledger.reports import export_csv, export_json

        written = 0
        async with opened(database_url(db), create=False) as ledger:
            if output == "csv":
                async for text in export_csv(ledger.store, since=start, until=end, key=key):
                    sink.write(text.encode())
                    written += 1
            else:
                async for data in export_json(ledger.store, since=start, until=end, key=key,
                                              lines=output == "jsonl"):
                    sink.write(data)
                    written += 1
        return written

    if path is None:
        run(work(sys.stdout.buffer))
        sys.stdout.buffer.flush()
    else:
        with open(path, "wb") as sink:
            run(work(sink))
