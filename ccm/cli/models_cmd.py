"""`ccm models [FILE]`: what the compiled table serves, one row per deployment.

Each row: the alias, its provider and the upstream model (every deployment of a balanced alias), the context window,
the output cap, the prices, the quirks, and whether the provider's key is set in this environment — `set`,
`default` (the `env()` default applies), `unset NAME`, `in file` (a literal key) or `-` (no key) — never the key.
`--format json` prints the same as a list of models. A file that does not compile prints its errors with carets,
as `ccm table` does, and exits 1.

Prices are read field by field from the table's `Price` model, so a price with more token classes, or Decimal
amounts, prints without a change here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import click
import orjson

from ccm.cli.check import compiled_or_exit
from ccm.cli.route_file import find_route_file
from ccm.table import FileRef, Literal_, Model, Provider, RoutingTable

COLUMNS = ("MODEL", "PROVIDER", "UPSTREAM", "CONTEXT", "MAX OUT", "PRICE $/M", "QUIRKS", "KEY")


def _amount(value: object) -> str:
    """0.27, Decimal("1.10") → `0.27`, `1.1`: the digits that say the amount, no float noise."""
    text = format(Decimal(str(value)).normalize(), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _tokens(count: int | None) -> str:
    if count is None:
        return "-"
    if count % 1_000_000 == 0:
        return f"{count // 1_000_000}m"
    if count % 1000 == 0:
        return f"{count // 1000}k"
    return str(count)


def prices(model: Model) -> dict[str, str]:
    """The model's price per token class, in the order the `Price` model declares them; absent classes left out."""
    price = model.price
    if price is None:
        return {}
    return {name: _amount(value) for name in type(price).model_fields
            if (value := getattr(price, name)) is not None}


def key_state(provider: Provider, environ: Mapping[str, str]) -> dict[str, Any]:
    """Whether the provider's key is there for this environment; the key's value is never read out."""
    key = provider.key
    if key is None:
        return {"source": "none"}
    if isinstance(key, Literal_):
        return {"source": "file"}
    if isinstance(key, FileRef):
        return {"source": "secret-file", "path": key.path, "state": "set" if key.read() is not None else "unset"}
    present = environ.get(key.name) not in (None, "")
    state = "set" if present else ("default" if key.default is not None else "unset")
    return {"source": "env", "env": key.name, "state": state}


def _key_text(state: Mapping[str, Any]) -> str:
    if state["source"] == "none":
        return "-"
    if state["source"] == "file":
        return "in file"
    if state["source"] == "secret-file":
        return state["state"] if state["state"] != "unset" else f"unreadable {state['path']}"
    return state["state"] if state["state"] != "unset" else f"unset {state['env']}"


def describe_models(table: RoutingTable, environ: Mapping[str, str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for model in table.models.values():
        upstreams = [(d.provider, d.model, d.weight) for d in model.deployments] or [(model.provider, model.model, 1)]
        deployments = [{"provider": provider, "model": upstream, "weight": weight,
                        "type": table.providers[provider].type, "key": key_state(table.providers[provider], environ)}
                       for provider, upstream, weight in upstreams]
        out.append({"name": model.name, "declared": model.declared, "deployments": deployments,
                    "balance": model.balance if len(deployments) > 1 else None, "context": model.context,
                    "max_output": model.max_output, "price": prices(model), "quirks": list(model.quirks)})
    return out


def _rows(models: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for model in models:
        price = " ".join(f"{name} {amount}" for name, amount in model["price"].items()) or "-"
        first = True
        for deployment in model["deployments"]:
            upstream = deployment["model"] + (f" (weight {deployment['weight']})"
                                              if len(model["deployments"]) > 1 else "")
            alias_cells = (model["name"], _tokens(model["context"]), _tokens(model["max_output"]), price,
                           " ".join(model["quirks"]) or "-") if first else ("", "", "", "", "")
            rows.append((alias_cells[0], deployment["provider"], upstream, *alias_cells[1:],
                         _key_text(deployment["key"])))
            first = False
    return rows


def render_table(models: list[dict[str, Any]]) -> str:
    rows = [COLUMNS, *_rows(models)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


@click.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--format", "output", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: a list of models with their deployments, limits, prices, quirks and key state.")
def models(file: str | None, output: str) -> None:
    """List the models a route file serves: providers, upstream models, limits, prices, quirks, keys.

    Without FILE: $CCM_ROUTES, else ./routes.ccm, else ~/.config/ccm/routes.ccm."""
    table = compiled_or_exit(file if file == "-" else str(find_route_file(file, os.environ))).compiled
    assert table is not None
    described = describe_models(table, os.environ)
    if output == "json":
        click.echo(orjson.dumps(described, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(render_table(described))
