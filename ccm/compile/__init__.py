"""Compile a route file into a frozen `RoutingTable`, collecting every problem on the way.

    compile_file(path, environ=None) -> CompileResult
    compile_source(text, name, environ=None, base_dir=None) -> CompileResult

`CompileResult.table` is None when there is any error; warnings never block a table. The environment is read only
to warn about unset variables; values never enter the table (it holds `env(NAME)` references). The file's own
tests are compiled into `table.tests`; `ccm.compile.check.check` compiles and runs them, and is what every caller
that asks "is this file good?" uses (`ccm check`, `ccm run`, the reloader, the admin editor).

Passes, in order: read and parse every file (includes expanded in place); declarations (providers, settings,
models, retry, breaker); the route block; fallbacks; tests; reachability warnings; then the table.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import field
from pathlib import Path
from typing import TypeVar

from ccm import table as t
from ccm.compile import declarations, rules
from ccm.compile.context import Context, mask_secrets
from ccm.compile.files import include_roots
from ccm.compile.loader import Loaded, load
from ccm.compile.route_tests import route_test, split_capture
from ccm.diagnostics import Diagnostic
from ccm.dsl import syntax as s
from ccm.frozen import frozen

__all__ = ["CompileResult", "compile_file", "compile_source", "split_capture"]


@frozen(slots=False)
class CompileResult:
    table: t.RoutingTable | None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # every file read: name → text

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if not d.is_error]

    @property
    def ok(self) -> bool:
        return self.table is not None


def compile_file(path: Path, environ: Mapping[str, str] | None = None) -> CompileResult:
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = "not found" if isinstance(error, FileNotFoundError) else error.__class__.__name__
        problem = Diagnostic(name, 1, 1, "error", f"cannot read route file: {reason}")
        return CompileResult(None, [problem])
    return compile_source(text, name, environ, base_dir=path.parent, identity=str(path.resolve()))


def compile_source(
    text: str,
    name: str,
    environ: Mapping[str, str] | None = None,
    *,
    base_dir: Path | None = None,
    identity: str | None = None,
) -> CompileResult:
    """Compile `text`, shown as `name` in diagnostics; includes and request files resolve against `base_dir`
    (default: `name`'s folder)."""
    folder = base_dir if base_dir is not None else Path(name).parent
    env = os.environ if environ is None else environ
    with _cycle_collector_paused():
        loaded = load(text, name, folder, identity, include_roots(folder, env))
        ctx = Context(loaded.lines, env)
        table = _compile(ctx, loaded)
    texts = {file.name: file.text for file in loaded.files}
    diagnostics = _ordered(loaded, mask_secrets([*loaded.diagnostics, *ctx.diagnostics], ctx.secrets))
    if table is None or any(d.is_error for d in diagnostics):
        return CompileResult(None, diagnostics, texts)
    return CompileResult(table, diagnostics, texts)


@contextmanager
def _cycle_collector_paused() -> Iterator[None]:
    """Parsing and compiling a big file allocates objects by the hundred thousand, nearly all of which live until the
    table is built: Python's cycle collector would trace them, and everything lark and pydantic loaded, again and
    again for nothing (a quarter of `ccm check`'s time on 2,000 rules). Reference counting still frees the rest."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _ordered(loaded: Loaded, diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    order = {name: index for index, name in enumerate(loaded.sources)}
    return sorted(diagnostics, key=lambda d: (order.get(d.file, len(order)), d.line, d.column))


def _compile(ctx: Context, loaded: Loaded) -> t.RoutingTable | None:
    statements = loaded.statements
    blocks = [st for st in statements if isinstance(st, s.Block)]
    provider_blocks = [b for b in blocks if b.keyword.text == "provider"]
    settings_blocks = [b for b in blocks if b.keyword.text == "settings"]
    test_blocks = [b for b in blocks if b.keyword.text == "test"]
    policy_blocks = [b for b in blocks if b.keyword.text in ("plan", "team")]
    model_decls = [st for st in statements if isinstance(st, s.ModelDecl)]
    routes = [st for st in statements if isinstance(st, s.RouteBlock)]
    retries = [st for st in statements if isinstance(st, s.Retry)]
    breakers = [st for st in statements if isinstance(st, s.Breaker)]

    for block in provider_blocks:
        assert isinstance(block.label, s.Word)
        if _duplicate(ctx, block.label, ctx.provider_spans, "provider"):
            continue
        ctx.provider_spans[block.label.text] = block.label.span
        compiled = declarations.provider(ctx, block)
        if compiled is not None:
            ctx.providers[compiled.name] = compiled

    settings, direct_on, direct_span = t.Settings(), True, None
    settings_block = _given_once(ctx, settings_blocks, "`settings`")
    if settings_block is not None:
        settings, direct_on = declarations.settings(ctx, settings_block)
        direct_span = next((i.span for i in settings_block.items if i.keyword.text == "direct"), None)

    for decl in model_decls:
        if _duplicate(ctx, decl.name, ctx.model_spans, "model"):
            continue
        ctx.model_spans[decl.name.text] = decl.name.span
        model = declarations.model(ctx, decl)
        if model is not None:
            ctx.models[model.name] = model
            _warn_uncapped(ctx, model, decl)

    retry = t.RetryPolicy()
    retry_statement = _given_once(ctx, retries, "the file-wide `retry`")
    if retry_statement is not None:
        retry = declarations.retry_policy(ctx, retry_statement) or retry

    breaker = t.BreakerPolicy()
    breaker_statement = _given_once(ctx, breakers, "the file-wide `breaker`")
    if breaker_statement is not None:
        breaker = declarations.breaker_policy(ctx, breaker_statement) or breaker

    compiled_rules: list[rules.CompiledRule] = []
    if not routes:
        first = loaded.files[0].name if loaded.files else loaded.sources[0]
        if not loaded.syntax_failed:
            problem = s.Span(first, 1, 1, 1, 1)
            ctx.error(problem, "no `route` block", "add one: route { default -> NAME }")
    for extra in routes[1:]:
        ctx.error(extra.span, "a second `route` block", f"rules live in one block, first given at {routes[0].span}")
    if routes:
        compiled_rules = rules.route_block(ctx, routes[0], direct_on, direct_span)

    fallback_statements = [st for st in statements if isinstance(st, s.Fallback)]
    fallbacks = rules.fallbacks(ctx, fallback_statements)
    _warn_slow_handover(ctx, fallbacks, retry)
    _warn_idle_hedges(ctx, fallbacks, retry)
    _warn_smaller_windows(ctx, fallback_statements)

    policies: dict[str, dict[str, t.Policy]] = {"plan": {}, "team": {}}
    policy_spans: dict[str, dict[str, s.Span]] = {"plan": {}, "team": {}}
    for block in policy_blocks:
        assert isinstance(block.label, s.Word)
        kind = block.keyword.text
        if _duplicate(ctx, block.label, policy_spans[kind], kind):
            continue
        policy_spans[kind][block.label.text] = block.label.span
        declared = declarations.policy(ctx, block)
        if declared is not None:
            policies[kind][declared.name] = declared

    tests: list[t.RouteTest] = []
    test_spans: dict[str, s.Span] = {}
    for block in test_blocks:
        assert isinstance(block.label, s.Str)
        if block.label.value in test_spans:
            first_span = test_spans[block.label.value]
            ctx.error(block.label.span, f'test "{block.label.value}" is declared twice', f"first at {first_span}")
            continue
        test_spans[block.label.value] = block.label.span
        compiled_test = route_test(ctx, block, loaded.folders.get(block.span.file, Path(".")), loaded.roots)
        if compiled_test is not None:
            tests.append(compiled_test)

    if not direct_on:
        _report_unreachable_names(ctx, compiled_rules, fallbacks, settings)

    if ctx.failed or loaded.syntax_failed:
        return None
    return t.RoutingTable(
        version=loaded.version(),
        sources=tuple(loaded.sources),
        settings=settings,
        providers=ctx.providers,
        models=ctx.models,
        rules=tuple(r.rule for r in compiled_rules),
        fallbacks=fallbacks,
        retry=retry,
        tests=tuple(tests),
        breaker=breaker,
        plans=policies["plan"],
        teams=policies["team"],
    )


def _warn_uncapped(ctx: Context, model: t.Model, decl: s.ModelDecl) -> None:
    """Claude Code asks for up to 128,000 output tokens; most APIs other than Anthropic's reject that outright, so a
    translated model without a cap fails every request (a top complaint about other routers)."""
    translated = any(ctx.providers[name].type != "anthropic" for name in _providers_of(model))
    if translated and model.max_output is None:
        ctx.warning(decl.name.span, f"model `{model.name}` has no `max_output`",
                    "Claude Code asks for up to 128k output tokens, which most non-Anthropic APIs reject; "
                    "add the model's real limit, e.g. `max_output 32k`")


# How long a model may hold a client that sees nothing (a hung upstream) before its fallback is tried: Claude Code
# shows no progress meanwhile, and a client with a 120 s timeout has given up by twice this.
HANDOVER_BOUND = 60.0


def _warn_slow_handover(ctx: Context, fallbacks: dict[str, tuple[str, ...]], retry: t.RetryPolicy) -> None:
    """A model whose upstream hangs before its first byte is given up on after (1 + retries on `timeout`) times
    `first_byte`, plus the backoffs between: warn when that outlasts the request's `total` (the fallback is never
    reached) or, for a model with a fallback, HANDOVER_BOUND."""
    for name, model in ctx.models.items():
        if not model.declared or model.provider not in ctx.providers:
            continue
        provider = ctx.providers[model.provider]
        policy = provider.retry or retry
        timeouts = provider.timeouts
        retries = policy.attempts if "timeout" in policy.on else 0
        waits = (1 + retries) * timeouts.first_byte + retries * policy.backoff_max
        chain = fallbacks.get(name, ())
        tries = f"{1 + retries} {'try' if retries == 0 else 'tries'} × first_byte {_seconds(timeouts.first_byte)}"
        hint = (f"lower `first_byte` on provider `{provider.name}` (30s hands a hang over in time), or leave "
                "`timeout` out of its `retry … on`")
        if waits > timeouts.total:
            ctx.warning(ctx.model_spans[name], f"model `{name}`: a hung upstream is retried past the request's "
                        f"`total` {_seconds(timeouts.total)} ({tries}, plus backoff)"
                        + (f", so `{chain[0]}` is never tried" if chain else ""), hint)
        elif chain and waits > HANDOVER_BOUND:
            ctx.warning(ctx.model_spans[name], f"model `{name}`: a hung upstream holds the client up to "
                        f"{_seconds(waits)} before `{chain[0]}` is tried ({tries}, plus backoff)", hint)


def _warn_idle_hedges(ctx: Context, fallbacks: dict[str, tuple[str, ...]], retry: t.RetryPolicy) -> None:
    """A `hedge` asks the next model of a chain: on a model that ends every chain it is in, there is none; and a
    hedge no shorter than `first_byte` (a hang not retried) comes after the hang has already been handed over."""
    followed = {name for head, rest in fallbacks.items() for name in (head, *rest[:-1])}
    for name, model in ctx.models.items():
        if model.hedge is None:
            continue
        span, after = ctx.model_spans[name], _seconds(model.hedge)
        if name not in followed:
            ctx.warning(span, f"`hedge after {after}` has no effect: no fallback chain goes on after `{name}`",
                        f"add one: fallback {name} -> NAME")
            continue
        serving = [ctx.providers[p] for p in _providers_of(model) if p in ctx.providers]
        unretried = [p for p in serving if "timeout" not in (p.retry or retry).on]
        if unretried and all(model.hedge >= p.timeouts.first_byte for p in unretried):
            first_byte = _seconds(min(p.timeouts.first_byte for p in unretried))
            ctx.warning(span, f"`hedge after {after}` never fires: `first_byte` {first_byte} hands a hung "
                        f"`{name}` to its fallback first", f"hedge after less than {first_byte}")


def _warn_smaller_windows(ctx: Context, chains: list[s.Fallback]) -> None:
    """A request sized for the head of a chain may not fit a model further down with a smaller `context`: ccm then
    skips that model (its count is over the window), so the chain is shorter than it reads."""
    for chain in chains:
        head = ctx.models.get(chain.chain[0].text)
        if head is None or head.context is None:
            continue
        for word in chain.chain[1:]:
            model = ctx.models.get(word.text)
            if model is not None and model.context is not None and model.context < head.context:
                ctx.warning(word.span, f"`{word.text}` has a smaller window ({_tokens(model.context)}) than "
                            f"`{head.name}` ({_tokens(head.context)}), which falls back to it",
                            f"a request above {_tokens(model.context)} tokens skips `{word.text}`; put a model with "
                            "a window as large in the chain, or accept that those go no further")


def _tokens(count: int) -> str:
    if count % 1_000_000 == 0:
        return f"{count // 1_000_000}m"
    return f"{count // 1000}k" if count % 1000 == 0 else str(count)


def _seconds(value: float) -> str:
    if value < 1:
        return f"{round(value * 1000)}ms"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def _providers_of(model: t.Model) -> list[str]:
    """The providers serving a model: its first deployment's, and every other deployment's."""
    return [d.provider for d in model.deployments] or [model.provider]


_Once = TypeVar("_Once", s.Block, s.Retry, s.Breaker)


def _given_once(ctx: Context, statements: list[_Once], what: str) -> _Once | None:
    """The first of `statements` (None when there is none), reporting every later one as given twice."""
    for extra in statements[1:]:
        ctx.error(extra.keyword.span, f"{what} is given twice", f"first given at {statements[0].span}")
    return statements[0] if statements else None


def _duplicate(ctx: Context, name: s.Word, declared: dict[str, s.Span], what: str) -> bool:
    if name.text in declared:
        ctx.error(name.span, f"{what} `{name.text}` is declared twice", f"first declared at {declared[name.text]}")
        return True
    return False


def _report_unreachable_names(
    ctx: Context, compiled: list[rules.CompiledRule], fallbacks: dict[str, tuple[str, ...]], settings: t.Settings
) -> None:
    """With `direct off`, an alias no rule or fallback names can never answer, nor can a provider none of those
    models use. (With `direct` on, `/model NAME` reaches every alias and provider: nothing is unused.)"""
    targets = {r.rule.target for r in compiled if r.rule.target is not None}
    used = targets | {name for head in targets for name in fallbacks.get(head, ())}
    for name, model in ctx.models.items():
        if model.declared and name not in used:
            ctx.warning(ctx.model_spans[name], f"model `{name}` is never used",
                        "no rule or fallback chain names it, and `direct` is off")
    used_providers = {provider for n in used if n in ctx.models for provider in _providers_of(ctx.models[n])}
    if settings.count_tokens:
        used_providers.add(settings.count_tokens)
    for name in ctx.providers:
        if name not in used_providers:
            ctx.warning(ctx.provider_spans[name], f"provider `{name}` is never used",
                        "no model that a rule or fallback chain reaches is served by it")
