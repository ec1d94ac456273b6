"""Settings, providers, models, retry and breaker policies: syntax items to table objects, every value checked.

Each block is read item by item; an item given twice is an error at the second, with the first named in the hint.
A declaration with errors is left out of the table (its name stays known, so references to it do not pile up
"unknown name" errors on top of the real one).
"""

from __future__ import annotations

from decimal import Decimal
from functools import partial
from typing import Any, get_args

from ccm import table as t
from ccm.compile import values
from ccm.compile.context import Context, table_span
from ccm.dsl import syntax as s
from ccm.dsl.printer import value_text

PROVIDER_TYPES: tuple[str, ...] = get_args(t.ProviderType)
AUTH_STYLES: tuple[str, ...] = get_args(t.AuthStyle)
RETRY_CAUSES: tuple[str, ...] = get_args(t.RetryOn)
QUIRKS: tuple[str, ...] = get_args(t.Quirk)
TIMEOUTS: tuple[str, ...] = tuple(t.Timeouts.model_fields)
PRICES: tuple[str, ...] = tuple(t.Price.model_fields)
BALANCES: tuple[str, ...] = get_args(t.Balance)
BUDGET_PERIODS: tuple[str, ...] = get_args(t.BudgetPeriod)


ProviderItem = s.Item | s.Retry | s.Breaker


def _unique_items(ctx: Context, items: tuple[ProviderItem, ...]) -> dict[str, ProviderItem]:
    seen: dict[str, ProviderItem] = {}
    for item in items:
        keyword = item.keyword.text
        if keyword in seen:
            first = seen[keyword].keyword.span
            ctx.error(item.keyword.span, f"`{keyword}` is given twice", f"first given at {first}")
        else:
            seen[keyword] = item
    return seen


def _pairs(args: tuple[s.Arg, ...]) -> list[tuple[s.Word, s.Word]]:
    words = [a for a in args if isinstance(a, s.Word)]
    return list(zip(words[::2], words[1::2], strict=False))  # the grammar allows only name-value pairs here


def _words(item: ProviderItem) -> list[s.Word]:
    assert isinstance(item, s.Item)
    return [a for a in item.args if isinstance(a, s.Word)]


# --- retry -------------------------------------------------------------------------------------------------------


def retry_policy(ctx: Context, node: s.Retry) -> t.RetryPolicy | None:
    failed = ctx.failed
    fields: dict[str, Any] = {}
    attempts = ctx.read(lambda text: values.whole(text, 0), node.attempts)
    fields["attempts"] = attempts
    if node.backoff is not None:
        low = ctx.read(values.duration, node.backoff.low)
        high = ctx.read(values.duration, node.backoff.high)
        if low is not None and high is not None and low > high:
            ctx.error(node.backoff.span, f"backoff range `{value_text(node.backoff)}` runs backwards",
                      "write the shorter wait first: 500ms..8s")
        fields["backoff_min"], fields["backoff_max"] = low, high
    if node.on is not None:
        causes = [ctx.choose(word, RETRY_CAUSES, "retry cause") for word in node.on]
        fields["on"] = tuple(dict.fromkeys(c for c in causes if c is not None))
    if ctx.failed and not failed or None in fields.values():
        return None
    return t.RetryPolicy(**fields)


# --- breaker -----------------------------------------------------------------------------------------------------


def breaker_policy(ctx: Context, node: s.Breaker) -> t.BreakerPolicy | None:
    """Parts left out take the defaults (5 failures, cooldown 10s..2m); one cool-down (`cooldown 30s`) is fixed."""
    if node.setting is not None:
        if node.setting.text != "off":
            ctx.error(node.setting.span, f"unknown breaker setting `{node.setting.text}`",
                      "write `breaker off`, or the numbers: breaker 5 failures cooldown 10s..2m")
            return None
        return t.BreakerPolicy(enabled=False)
    failed = ctx.failed
    fields: dict[str, Any] = {}
    if node.failures is not None:
        fields["failures"] = ctx.read(lambda text: values.whole(text, 1), node.failures)
    if isinstance(node.cooldown, s.Range):
        low = _cooldown(ctx, node.cooldown.low)
        high = _cooldown(ctx, node.cooldown.high)
        if low is not None and high is not None and low > high:
            ctx.error(node.cooldown.span, f"cool-down range `{value_text(node.cooldown)}` runs backwards",
                      "write the first cool-down first: 10s..2m (it doubles after each failed probe, up to the second)")
        fields["cooldown"], fields["max_cooldown"] = low, high
    elif isinstance(node.cooldown, s.Word):
        fields["cooldown"] = fields["max_cooldown"] = _cooldown(ctx, node.cooldown)
    if ctx.failed and not failed or None in fields.values():
        return None
    return t.BreakerPolicy(**fields)


def _cooldown(ctx: Context, word: s.Word) -> float | None:
    seconds = ctx.read(values.duration, word)
    if seconds is not None and seconds <= 0:
        ctx.error(word.span, f"a cool-down of `{word.text}` would never keep a failing provider out",
                  "give it a length, e.g. 10s; to never open the breaker, write `breaker off`")
        return None
    return seconds


# --- settings ----------------------------------------------------------------------------------------------------


def settings(ctx: Context, block: s.Block) -> tuple[t.Settings, bool]:
    """The settings and whether the implicit `direct` rule is on."""
    fields: dict[str, Any] = {}
    direct = True
    for keyword, item in _unique_items(ctx, block.items).items():
        assert isinstance(item, s.Item)
        if keyword == "auth":
            keys = []
            for arg in item.args:
                if isinstance(arg, s.Str):
                    ctx.secret_written(arg, "a client key is written in the file: keys belong in the environment",
                                       'auth env("CCM_API_KEY")')
                key = ctx.value(arg, secret=True)
                if key is not None:
                    keys.append(key)
            fields["auth"] = tuple(keys)
        elif keyword == "background":
            globs = [ctx.glob(arg) for arg in item.args if isinstance(arg, s.Str)]
            fields["background"] = tuple(g for g in globs if g is not None)
        elif keyword == "count_tokens":
            (word,) = _words(item)
            fields["count_tokens"] = None if word.text == "local" else _count_tokens_provider(ctx, word)
        elif keyword == "body_limit":
            (word,) = _words(item)
            fields["body_limit"] = ctx.read(values.size, word)
        elif keyword == "direct":
            (word,) = _words(item)
            direct = ctx.choose(word, ("on", "off"), "`direct` setting") != "off"
        elif keyword == "markup":
            (word,) = _words(item)
            fields["markup"] = ctx.read(values.percent, word)
        elif keyword == "ledger":
            what, policy = _words(item)
            if ctx.choose(what, ("fail",), "ledger setting") is not None:
                fields["ledger_failure"] = ctx.choose(policy, ("closed", "open"), "ledger failure policy")
    clean = {k: v for k, v in fields.items() if v is not None or k == "count_tokens"}
    return t.Settings(**clean), direct


def _count_tokens_provider(ctx: Context, word: s.Word) -> str | None:
    provider = ctx.providers.get(word.text)
    if provider is None:
        if word.text not in ctx.provider_spans:
            ctx.error(word.span, f"unknown provider `{word.text}`",
                      "name an `anthropic` provider to forward count_tokens to, or `local` to count here")
        return None
    if provider.type != "anthropic":
        ctx.error(word.span, f"count_tokens can only be forwarded to an `anthropic` provider; `{word.text}` is "
                             f"`{provider.type}`", "use `local` to count here")
        return None
    return word.text


# --- providers ---------------------------------------------------------------------------------------------------


def provider(ctx: Context, block: s.Block) -> t.Provider | None:
    assert isinstance(block.label, s.Word)
    name = block.label.text
    failed = ctx.failed
    items = _unique_items(ctx, block.items)
    fields: dict[str, Any] = {"name": name, "span": table_span(block.label.span)}
    kind: str | None = None
    client_word: s.Arg | None = None  # the `client` of `key … or client`
    for keyword, item in items.items():
        if isinstance(item, s.Retry):
            fields["retry"] = retry_policy(ctx, item)
            continue
        if isinstance(item, s.Breaker):
            fields["breaker"] = breaker_policy(ctx, item)
            continue
        if keyword == "type":
            kind = ctx.choose(_words(item)[0], PROVIDER_TYPES, "provider type")
        elif keyword in ("url", "key"):
            fields[keyword] = ctx.value(item.args[0], optional=len(item.args) > 1, secret=keyword == "key")
            if keyword == "key" and isinstance(item.args[0], s.Str):
                ctx.secret_written(item.args[0], f"provider `{name}`'s API key is written in the file: keys belong "
                                                 "in the environment", f'key env("{_variable(name)}_API_KEY")')
            if keyword == "key" and len(item.args) > 1:
                client_word = item.args[-1]
                fields["key_or_client"] = True
        elif keyword == "auth":
            fields["auth"] = ctx.choose(_words(item)[0], AUTH_STYLES, "auth style")
        elif keyword == "headers":
            fields["headers"] = _headers(ctx, item)
        elif keyword == "timeout":
            fields["timeouts"] = _timeouts(ctx, item)
        elif keyword == "concurrency":
            fields["max_concurrency"] = ctx.read(lambda text: values.whole(text, 1), _words(item)[0])
    for required in ("type", "url"):
        if required not in items:
            example = "type openai" if required == "type" else 'url "https://api.example.com/v1"'
            ctx.error(block.label.span, f"provider `{name}` has no `{required}`", f"add a line: {example}")
    if client_word is not None and kind not in (None, "anthropic"):
        ctx.error(client_word.span, "`or client` passes the client's own Anthropic credentials on: only an "
                  "`anthropic` provider can take them", "remove `or client`, or set the key's variable")
    if ctx.failed and not failed or kind is None:
        return None
    fields["type"] = kind
    fields.setdefault("auth", t.DEFAULT_AUTH[kind])
    return t.Provider(**{k: v for k, v in fields.items() if v is not None})


def _headers(ctx: Context, item: s.Item) -> tuple[tuple[str, t.Value], ...]:
    (headers,) = item.args
    assert isinstance(headers, s.Object)
    out = []
    for member in headers.members:
        value = ctx.value(member.value, secret=True)
        if value is None:
            continue
        header = values.member_key(member)
        if isinstance(member.value, s.Str) and t.is_credential_header(header, member.value.value):
            ctx.secret_written(member.value, f"header `{header}` carries a credential written in the file: keys "
                                             "belong in the environment", f'"{header}": env("{_variable(header)}")')
        out.append((header, value))
    return tuple(out)


def _variable(name: str) -> str:
    """An environment variable's name made from a provider's or header's (`my-proxy` → `MY_PROXY`)."""
    return "".join(c if c.isalnum() else "_" for c in name.upper())


def _timeouts(ctx: Context, item: s.Item) -> t.Timeouts:
    fields: dict[str, float] = {}
    for name, amount in _pairs(item.args):
        which = ctx.choose(name, TIMEOUTS, "timeout")
        seconds = ctx.read(values.duration, amount)
        if which is not None and seconds is not None:
            if which in fields:
                ctx.error(name.span, f"timeout `{which}` is given twice")
            fields[which] = seconds
    return t.Timeouts(**fields)


# --- models ------------------------------------------------------------------------------------------------------


def model(ctx: Context, decl: s.ModelDecl) -> t.Model | None:
    name = decl.name.text
    failed = ctx.failed
    deployments = _deployments(ctx, decl)
    first = deployments[0]
    fields: dict[str, Any] = {
        "name": name, "provider": first.provider, "model": first.model, "span": table_span(decl.name.span),
    }
    if len(deployments) > 1:
        fields["deployments"] = tuple(deployments)
    for keyword, item in _unique_items(ctx, decl.items or ()).items():
        assert isinstance(item, s.Item)
        if keyword in ("context", "max_output"):
            fields[keyword] = ctx.read(values.token_count, _words(item)[0])
        elif keyword == "price":
            fields["price"] = _price(ctx, item, _served_by(ctx, deployments, decl))
        elif keyword == "force":
            fields["force"] = _force(ctx, item)
        elif keyword == "drop":
            fields["drop"] = tuple(dict.fromkeys(w.text for w in _words(item)))
        elif keyword == "quirks":
            quirks = [ctx.choose(w, QUIRKS, "quirk") for w in _words(item)]
            fields["quirks"] = tuple(dict.fromkeys(q for q in quirks if q is not None))
        elif keyword == "hedge":
            fields["hedge"] = ctx.read(values.positive_duration, _words(item)[-1])
        elif keyword == "balance":
            fields["balance"] = ctx.choose(_words(item)[0], BALANCES, "balance")
            if len(deployments) == 1:
                ctx.warning(item.keyword.span, f"`balance` has no effect: model `{name}` has one deployment",
                            "list several, separated by commas: model NAME = a/model, b/model")
    if ctx.failed and not failed or any(d.provider not in ctx.providers for d in deployments):
        return None
    return t.Model(**{k: v for k, v in fields.items() if v is not None})


def _deployments(ctx: Context, decl: s.ModelDecl) -> list[t.Deployment]:
    """Every deployment as written, checked: a known provider, a weight of at least 1, none listed twice."""
    out: list[t.Deployment] = []
    seen: dict[str, s.Span] = {}
    name = decl.name.text
    for written in decl.deployments:
        path = written.path
        provider_name, _, model_id = path.text.partition("/")
        if provider_name not in ctx.providers and provider_name not in ctx.provider_spans:
            ctx.error(path.span, f"unknown provider `{provider_name}`", _did_you_mean_provider(ctx, provider_name))
        if path.text in seen:
            ctx.error(path.span, f"deployment `{path.text}` is listed twice in model `{name}`",
                      f"first listed at {seen[path.text]}; give it one entry with the combined weight")
        seen.setdefault(path.text, path.span)
        weight = 1
        if written.weight is not None:
            weight = ctx.read(values.weight, written.weight) or 1
            if len(decl.deployments) == 1:
                ctx.warning(written.weight.span, f"a weight has no effect: model `{name}` has one deployment",
                            "weights share requests between several deployments: model NAME = a/model weight 3, "
                            "b/model weight 1")
        out.append(t.Deployment(provider=provider_name, model=model_id, weight=weight,
                                span=table_span(path.span)))
    return out


def _served_by(ctx: Context, deployments: list[t.Deployment], decl: s.ModelDecl) -> tuple[str, ...]:
    kinds: list[str] = [ctx.providers[d.provider].type for d in deployments if d.provider in ctx.providers]
    for item in decl.items or ():
        if isinstance(item, s.Item) and item.keyword.text == "quirks":
            kinds += [w.text for w in _words(item)]
    return tuple(dict.fromkeys(kinds))


def _did_you_mean_provider(ctx: Context, name: str) -> str:
    return ctx.suggest(name, lambda: ctx.provider_spans) or f"declare it: provider {name} {{ type … url … }}"


# Classes an upstream bills apart from plain input, per kind of upstream: a price for a model served there must give
# each of them, since any rate ccm made up (5m for 1h, input for a cache write) would be a wrong cost. Claude Code
# writes 1-hour cache entries; pricing them as 5-minute ones understated a real session by 30% (ccusage #899).
_BILLED_APART: dict[str, tuple[str, ...]] = {
    "anthropic": ("cache_write_5m", "cache_write_1h", "cache_read", "web_search"),
    "keep_cache_control": ("cache_write_5m", "cache_read"),  # OpenRouter reports Claude's cache writes and reads
}
_PRICE_EXAMPLE = "price input 3 output 15 cache_write_5m 3.75 cache_write_1h 6 cache_read 0.30 web_search 10"


def _price(ctx: Context, item: s.Item, served_by: tuple[str, ...]) -> t.Price | None:
    """`price input 3 output 15 …`; `served_by` names the kinds of upstream (provider types, and quirks that change
    what is billed) the model reaches, so that a class one of them bills apart is never left out."""
    fields: dict[str, Decimal | None] = {}
    for name, amount in _pairs(item.args):
        if name.text == "cache_write":
            ctx.error(name.span, "`cache_write` does not say which cache writes: Anthropic bills 5-minute and 1-hour "
                                 "writes at different rates (1.25x and 2x input)",
                      "give both: cache_write_5m 3.75 cache_write_1h 6 (USD per million tokens)")
            fields[name.text] = None
            fields.setdefault("cache_write_5m", None)  # said once, by this error
            fields.setdefault("cache_write_1h", None)
            continue
        which = ctx.choose(name, PRICES, "price")
        if which in fields:
            ctx.error(name.span, f"price `{which}` is given twice")
        fields[which or name.text] = ctx.read(values.decimal, amount)
    missing = [p for p in ("input", "output") if p not in fields]
    for kind in served_by:
        missing += [p for p in _BILLED_APART.get(kind, ()) if p not in fields and p not in missing]
    if missing:
        why = ""
        if any(p not in ("input", "output") for p in missing):
            kind = next(k for k in served_by if set(_BILLED_APART.get(k, ())) & set(missing))
            who = ("an `anthropic` upstream bills" if kind == "anthropic"
                   else "with `keep_cache_control` the upstream reports and bills")
            why = f": {who} each of these apart, and ccm never derives one price from another"
        ctx.error(item.keyword.span, f"price needs {', '.join(missing)}{why}",
                  f"{_PRICE_EXAMPLE} (USD per million tokens; web_search per 1,000 searches)")
        return None
    if any(v is None for v in fields.values()) or not set(fields) <= set(PRICES):
        return None
    return t.Price(**fields)  # type: ignore[arg-type]


def _force(ctx: Context, item: s.Item) -> tuple[tuple[str, Any], ...]:
    (forced,) = item.args
    assert isinstance(forced, s.Object)
    out = []
    for member in forced.members:
        env = values.find_env(member.value)
        if env is not None:
            ctx.error(env.span, f"`{values.reference_kind(env)}` cannot be used in `force`",
                      "forced parameters are written literally")
            continue
        out.append((values.member_key(member), values.json_value(member.value)))
    return tuple(out)


def policy(ctx: Context, block: s.Block) -> t.Policy | None:
    """`plan NAME { models a b  markup 10%  budget $20 per month  rpm 60  tpm 400k }` (or `team`): the models are
    aliases the file declares."""
    assert isinstance(block.label, s.Word)
    fields: dict[str, Any] = {"kind": block.keyword.text, "name": block.label.text,
                              "span": table_span(block.label.span)}
    for keyword, item in _unique_items(ctx, block.items).items():
        assert isinstance(item, s.Item)
        if keyword == "models":
            names = []
            for word in _words(item):
                if word.text not in ctx.models and word.text not in ctx.model_spans:
                    ctx.error(word.span, f"unknown model `{word.text}`",
                              ctx.suggest(word.text, lambda: ctx.model_spans) or "name a model alias the file declares")
                names.append(word.text)
            fields["models"] = tuple(dict.fromkeys(names))
        elif keyword == "markup":
            fields["markup"] = ctx.read(values.percent, _words(item)[0])
        elif keyword == "budget":
            fields["budget"], fields["period"] = _budget(ctx, item)
        elif keyword in values.RATE_UNITS:
            fields[keyword] = ctx.read(partial(values.rate_limit, keyword=keyword), _words(item)[0])
    return t.Policy(**{k: v for k, v in fields.items() if v is not None})


def _budget(ctx: Context, item: s.Item) -> tuple[Decimal | None, str | None]:
    """`budget $20 per month`: the amount and its period, each checked (either None when it is wrong)."""
    amount, *rest = _words(item)
    usd = ctx.read(values.budget, amount)
    if not rest:
        ctx.error(item.span, "a budget needs its period", f"say which: `budget {amount.text} per month` (or day, "
                                                          "week)")
        return usd, None
    return usd, ctx.choose(rest[-1], BUDGET_PERIODS, "budget period")
