"""`ccm keys` and `ccm credits`: issue, inspect, revoke and rotate keys; add credit.

Every option is read and checked before the database is opened, so a bad one writes nothing:

    ccm keys create NAME [--credits USD] [--budget USD --period day|week|month] [--models a,b] [--rpm N] [--tpm N]
                         [--expires DATE] [--markup 20%] [--plan P] [--team T] [--format text|json]
    ccm keys list | show NAME [--routes FILE] | revoke NAME | rotate NAME [--grace 1h]
    ccm credits add NAME USD [--note TEXT]

The secret is printed once (`--format json`: an object with `name` and `secret`); only its hash is stored.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import click
import orjson

from ccm.cli.check import compiled_or_exit
from ccm.cli.database import database_url, db_option, ledger_errors, run
from ccm.cli.route_file import find_route_file
from ccm.ledger.errors import BadInput
from ccm.ledger.keys import check_name, parse_limit, parse_models
from ccm.ledger.money import format_usd, parse_usd
from ccm.ledger.records import Account, KeyInfo, NewKey, limits_of
from ccm.ledger.times import PERIODS, iso, now, parse_duration, parse_future

formats = click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True)


def parse_markup(text: str) -> Decimal:
    found = re.fullmatch(r"([0-9]{1,5}(?:\.[0-9]{1,6})?)%", text.strip())
    if not found or Decimal(found.group(1)) > 10_000:
        raise BadInput(f"`{text}` is not a markup", "a percentage added to the upstream cost, from 0% to 10000%: "
                                                     "--markup 20%")
    return Decimal(found.group(1))


def _usd(value: int | None) -> str | None:
    return None if value is None else format_usd(value)


def describe(key: KeyInfo, account: Account | None = None) -> dict[str, Any]:
    """What `keys show` and `--format json` say of a key (as `KeyInfo.under` made it, when a route file is known:
    `from` then names the plan or team each inherited limit comes from)."""
    at = now()
    out: dict[str, Any] = {
        "name": key.name, "id": key.id, "prefix": key.prefix + "…", "status": key.status(at),
        "created_at": iso(key.created_at), "expires_at": iso(key.expires_at) if key.expires_at else None,
        "revoked_at": iso(key.revoked_at) if key.revoked_at else None,
        "credits": key.credits, "budget": _usd(key.budget), "period": key.period, "models": list(key.models),
        "rpm": key.rpm, "tpm": key.tpm, "markup": f"{key.markup}%" if key.markup is not None else None,
        "plan": key.plan, "team": key.team,
    }
    if key.inherited.from_:
        out["from"] = dict(key.inherited.from_)
    if account is not None:
        out.update({
            "balance": format_usd(account.balance) if key.credits else None,
            "credited": format_usd(account.credited), "settled": format_usd(account.settled),
            "held": format_usd(account.held),
        })
    return out


def _print(data: dict[str, Any], output: str) -> None:
    if output == "json":
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    width = max(len(k) for k in data)
    for name, value in data.items():
        if value is None or value == [] or value is False and name != "credits":
            continue
        if isinstance(value, dict):  # `from`: budget -> plan trial
            shown = ", ".join(f"{limit} of its {source}" for limit, source in value.items())
        else:
            shown = ", ".join(value) if isinstance(value, list) else value
        click.echo(f"{name:<{width}}  {shown}")


routes_option = click.option(
    "--routes", "routes", metavar="FILE",
    help="The route file whose plans and teams give keys their budget and limits (default: the one `ccm run` "
         "serves: $CCM_ROUTES, ./routes.ccm, ~/.config/ccm/routes.ccm).")


def policies_from(routes: str | None) -> Callable[[KeyInfo], KeyInfo]:
    """Each key as admission sees it under the route file's plans and teams (`KeyInfo.under`); as stored when there
    is no route file. A route file with errors is reported and the command stops (exit 1), as `ccm table` does."""
    found = find_route_file(routes, os.environ, required=False)
    if found is None:
        return lambda key: key
    table = compiled_or_exit(str(found)).table
    assert table is not None  # compiled_or_exit exits otherwise
    return lambda key: key.under(limits_of(table.policies_of(key.plan, key.team)))


@click.group()
def keys() -> None:
    """Keys: create, list, show, revoke, rotate."""


@keys.command()
@click.argument("name")
@click.option("--credits", "credits_", metavar="USD", help="Prepaid: the balance every request is held against.")
@click.option("--budget", metavar="USD", help="A spend cap per --period (calendar, UTC).")
@click.option("--period", type=click.Choice(PERIODS), help="The budget's period: day, week (from Monday) or month.")
@click.option("--models", metavar="A,B", help="The model aliases this key may use (default: all).")
@click.option("--rpm", metavar="N", help="Requests per minute.")
@click.option("--tpm", metavar="N", help="Tokens (input + output) per minute.")
@click.option("--expires", metavar="DATE", help="When the key stops working: 2030-01-01, or 30d from now.")
@click.option("--markup", metavar="PCT", help="Added to the upstream cost: 20% (default: the route file's).")
@click.option("--plan", metavar="NAME", help="The plan the key belongs to.")
@click.option("--team", metavar="NAME", help="The team the key belongs to.")
@click.option("--note", metavar="TEXT", help="Said on the initial credit entry.")
@formats
@db_option
@ledger_errors
def create(name: str, credits_: str | None, budget: str | None, period: str | None, models: str | None,
           rpm: str | None, tpm: str | None, expires: str | None, markup: str | None, plan: str | None,
           team: str | None, note: str | None, output: str, db: str | None) -> None:
    """Create a key and print its secret, once."""
    if (budget is None) != (period is None):
        raise BadInput("--budget and --period go together", "e.g. --budget 50 --period month")
    new = NewKey(
        name=check_name(name),
        credits=parse_usd(credits_) if credits_ is not None else None,
        budget=parse_usd(budget, allow_zero=False) if budget is not None else None,
        period=period,  # type: ignore[arg-type]
        models=parse_models(models) if models is not None else (),
        rpm=parse_limit(rpm, "rpm") if rpm is not None else None,
        tpm=parse_limit(tpm, "tpm") if tpm is not None else None,
        expires_at=parse_future(expires) if expires is not None else None,
        markup=parse_markup(markup) if markup is not None else None,
        plan=check_name(plan) if plan is not None else None,
        team=check_name(team) if team is not None else None,
        note=note,
    )
    from ccm.ledger.ledger import opened

    async def work() -> tuple[KeyInfo, str, Account]:
        async with opened(database_url(db)) as ledger:
            key, secret = await ledger.create_key(new)
            _, account = await ledger.key(key.name)
            return key, secret, account

    key, secret, account = run(work())
    if output == "json":
        _print({**describe(key, account), "secret": secret}, "json")
        return
    click.echo(f"created key `{key.name}`" + (f" with {format_usd(account.balance)} of credit" if key.credits else ""))
    click.echo(secret)
    click.echo("the secret is shown only this once: store it now (ccm keeps only its hash)", err=True)


@keys.command("list")
@formats
@routes_option
@db_option
def list_keys(output: str, routes: str | None, db: str | None) -> None:
    """Every key, with its status and balance."""
    under = policies_from(routes)
    from ccm.ledger.ledger import opened

    async def work() -> list[tuple[KeyInfo, Account]]:
        async with opened(database_url(db)) as ledger:
            return await ledger.keys()

    found = [(under(key), account) for key, account in run(work())]
    if output == "json":
        click.echo(orjson.dumps([describe(k, a) for k, a in found], option=orjson.OPT_INDENT_2).decode())
        return
    if not found:
        click.echo("no keys yet: ccm keys create NAME --credits 10")
        return
    at = now()
    rows = [("NAME", "PREFIX", "STATUS", "BALANCE", "SPENT", "HELD", "LIMITS")]
    for key, account in found:
        limits = []
        if key.budget is not None:
            limits.append(f"{format_usd(key.budget)}/{key.period}" + _source(key, "budget"))
        if key.rpm:
            limits.append(f"{key.rpm} rpm" + _source(key, "rpm"))
        if key.tpm:
            limits.append(f"{key.tpm} tpm" + _source(key, "tpm"))
        rows.append((key.name, key.prefix + "…", key.status(at), format_usd(account.balance) if key.credits else "-",
                     format_usd(account.settled), format_usd(account.held), " ".join(limits) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _source(key: KeyInfo, limit: str) -> str:
    source = key.inherited.source(limit)
    return f" ({source})" if source else ""


@keys.command()
@click.argument("name")
@formats
@routes_option
@db_option
def show(name: str, output: str, routes: str | None, db: str | None) -> None:
    """One key: its policy (its own, else its plan's or team's) and its account."""
    under = policies_from(routes)
    from ccm.ledger.ledger import opened

    async def work() -> tuple[KeyInfo, Account]:
        async with opened(database_url(db)) as ledger:
            return await ledger.key(name)

    key, account = run(work())
    _print(describe(under(key), account), output)


@keys.command()
@click.argument("name")
@db_option
def revoke(name: str, db: str | None) -> None:
    """Revoke a key: refused at once, on every instance (requests in flight finish what they hold)."""
    from ccm.ledger.ledger import opened

    async def work() -> KeyInfo:
        async with opened(database_url(db)) as ledger:
            return await ledger.revoke(name)

    key = run(work())
    click.echo(f"revoked key `{key.name}`")


@keys.command()
@click.argument("name")
@click.option("--grace", default="0", show_default=True, metavar="DURATION",
              help="How long the old secret keeps working: 1h, 30m, 7d, or 0.")
@formats
@db_option
@ledger_errors
def rotate(name: str, grace: str, output: str, db: str | None) -> None:
    """Give a key a new secret; the old one works for --grace more."""
    length = parse_duration(grace)
    from ccm.ledger.ledger import opened

    async def work() -> tuple[KeyInfo, str]:
        async with opened(database_url(db)) as ledger:
            return await ledger.rotate(name, length)

    key, secret = run(work())
    if output == "json":
        _print({"name": key.name, "secret": secret, "prefix": key.prefix + "…",
                "old_secret_expires_at": iso(now() + length)}, "json")
        return
    click.echo(f"rotated key `{key.name}`; the old secret works until {iso(now() + length)}")
    click.echo(secret)
    click.echo("the secret is shown only this once: store it now (ccm keeps only its hash)", err=True)


@click.group()
def credits() -> None:
    """Credits: add (an entry in the ledger, never an overwritten number)."""


@credits.command()
@click.argument("name")
@click.argument("amount", metavar="USD")
@click.option("--note", metavar="TEXT", help="Why (an invoice number, a refund…).")
@db_option
@ledger_errors
def add(name: str, amount: str, note: str | None, db: str | None) -> None:
    """Add USD of credit to a prepaid key."""
    value = parse_usd(amount, allow_zero=False)
    from ccm.ledger.ledger import opened

    async def work() -> Account:
        async with opened(database_url(db)) as ledger:
            return await ledger.add_credits(name, value, note)

    account = run(work())
    click.echo(f"added {format_usd(value)} to `{name}`: balance {format_usd(account.balance)} "
               f"({format_usd(account.credited)} credited in all)")
