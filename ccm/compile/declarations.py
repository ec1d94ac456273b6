"""Settings, providers, models and retry policies: syntax items to table objects, every value checked.

Each block is read item by item; an item given twice is an error at the second, with the first named in the hint.
A declaration with errors is left out of the table (its name stays known, so references to it do not pile up
"unknown name" errors on top of the real one).
"""

from __future__ import annotations

from typing import Any, get_args

from ccm import table as t
from ccm.compile import values
from ccm.compile.context import Context, table_span
from ccm.diagnostics import did_you_mean
from ccm.dsl import syntax as s
from ccm.dsl.printer import value_text

PROVIDER_TYPES: tuple[str, ...] = get_args(t.ProviderType)
AUTH_STYLES: tuple[str, ...] = get_args(t.AuthStyle)
RETRY_CAUSES: tuple[str, ...] = get_args(t.RetryOn)
QUIRKS: tuple[str, ...] = get_args(t.Quirk)
TIMEOUTS: tuple[str, ...] = tuple(t.Timeouts.model_fields)
PRICES: tuple[str, ...] = tuple(t.Price.model_fields)


def _unique_items(ctx: Context, items: tuple[s.Item | s.Retry, ...]) -> dict[str, s.Item | s.Retry]:
    seen: dict[str, s.Item | s.Retry] = {}
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
    return list(zip(words[::2], words[1::2]))


def _words(item: s.Item | s.Retry) -> list[s.Word]:
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
    if ctx.failed and not failed:
        return None
    return t.RetryPolicy(**fields)


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
                    ctx.warning(arg.span, "a client key written in the file ends up in version control",
                                'read it from the environment: env("CCM_API_KEY")')
                key = ctx.value(arg)
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
    for keyword, item in items.items():
        if isinstance(item, s.Retry):
            fields["retry"] = retry_policy(ctx, item)
            continue
        if keyword == "type":
            kind = ctx.choose(_words(item)[0], PROVIDER_TYPES, "provider type")
        elif keyword in ("url", "key"):
            fields[keyword] = ctx.value(item.args[0])
            if keyword == "key" and isinstance(item.args[0], s.Str):
                ctx.warning(item.args[0].span, f"provider `{name}`'s API key is written in the file",
                            'read it from the environment: env("MY_API_KEY")')
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
    if ctx.failed and not failed or kind is None:
        return None
    fields["type"] = kind
    fields.setdefault("auth", t.DEFAULT_AUTH[kind])
    return t.Provider(**{k: v for k, v in fields.items() if v is not None})


def _headers(ctx: Context, item: s.Item) -> tuple[tuple[str, t.Literal_ | t.EnvRef], ...]:
    (headers,) = item.args
    assert isinstance(headers, s.Object)
    out = []
    for member in headers.members:
        value = ctx.value(member.value)
        if value is not None:
            out.append((values.member_key(member), value))
    return tuple(out)


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
    provider_name, _, model_id = decl.path.text.partition("/")
    if provider_name not in ctx.providers and provider_name not in ctx.provider_spans:
        hint = _did_you_mean_provider(ctx, provider_name)
        ctx.error(decl.path.span, f"unknown provider `{provider_name}`", hint)
    fields: dict[str, Any] = {
        "name": name, "provider": provider_name, "model": model_id, "span": table_span(decl.name.span),
    }
    for keyword, item in _unique_items(ctx, decl.items or ()).items():
        assert isinstance(item, s.Item)
        if keyword in ("context", "max_output"):
            fields[keyword] = ctx.read(values.token_count, _words(item)[0])
        elif keyword == "price":
            fields["price"] = _price(ctx, item)
        elif keyword == "force":
            fields["force"] = _force(ctx, item)
        elif keyword == "drop":
            fields["drop"] = tuple(dict.fromkeys(w.text for w in _words(item)))
        elif keyword == "quirks":
            quirks = [ctx.choose(w, QUIRKS, "quirk") for w in _words(item)]
            fields["quirks"] = tuple(dict.fromkeys(q for q in quirks if q is not None))
    if ctx.failed and not failed or provider_name not in ctx.providers:
        return None
    return t.Model(**{k: v for k, v in fields.items() if v is not None})


def _did_you_mean_provider(ctx: Context, name: str) -> str:
    return did_you_mean(name, ctx.provider_spans) or f"declare it: provider {name} {{ type … url … }}"


def _price(ctx: Context, item: s.Item) -> t.Price | None:
    fields: dict[str, float | None] = {}
    for name, amount in _pairs(item.args):
        which = ctx.choose(name, PRICES, "price")
        fields[which or name.text] = ctx.read(values.decimal, amount)
    missing = [p for p in ("input", "output") if p not in fields]
    if missing:
        ctx.error(item.keyword.span, f"price needs {' and '.join(missing)}", "price input 3 output 15 (USD per million)")
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
            ctx.error(env.span, "`env(...)` cannot be used in `force`", "forced parameters are written literally")
            continue
        out.append((values.member_key(member), values.json_value(member.value)))
    return tuple(out)
