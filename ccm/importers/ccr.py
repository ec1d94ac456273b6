"""`ccm import ccr`: claude-code-router's config.json (JSON5) → a route plan.

What CCR does, in the order it does it (its router, v2.0.0), and what the plan writes for it:

    Router.image, last message has an image   → `image -> …`       (CCR's image agent runs before the router)
    model "provider,model" (`/model` picks)    → `direct`           (ccm reads `provider,model` too)
    tokens > longContextThreshold (60000)      → `tokens > N -> …`
    model has "claude" and "haiku"             → `background -> …`  with `settings { background "*claude*haiku*" }`
    a `web_search…` tool                        → `websearch -> …`   (CCR: outranks think)
    `thinking` present                          → `thinking -> …`
    otherwise                                   → `default -> …`

Every model a provider lists becomes an alias carrying what its transformers did (caps, forced parameters,
quirks), so a `/model` pick gets them too. `fallback.<scenario>` lists become chains on the scenario's alias; when
two scenarios share a model but not its fallbacks, the second gets its own alias of that model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ccm.importers import ccr_transformers as tf
from ccm.importers import scenarios
from ccm.importers.keys import env_reference, has_interpolation, provider_key, router_key
from ccm.importers.plan import (
    DeploymentPlan,
    Env,
    ModelPlan,
    Names,
    ProviderPlan,
    RoutePlan,
    RulePlan,
    TestPlan,
    Text,
    duration_text,
    env_name,
    is_model_id,
    name_from,
    tokens_text,
)
from ccm.importers.source import Document, Path, Reader, Report, describe, dotted

TOP_LEVEL = {"Providers", "providers", "Router", "fallback", "APIKEY", "HOST", "PORT", "PROXY_URL", "API_TIMEOUT_MS",
             "CUSTOM_ROUTER_PATH", "transformers", "StatusLine", "forceUseImageAgent", "REWRITE_SYSTEM_PROMPT",
             "LOG", "LOG_LEVEL", "LOG_FILE", "NON_INTERACTIVE_MODE", "CLAUDE_PATH"}
PROVIDER_FIELDS = {"name", "api_base_url", "api_key", "models", "transformer"}
ROUTER_FIELDS = {"default", "background", "think", "longContext", "longContextThreshold", "webSearch", "image"}
SCENARIOS = ("default", "background", "think", "longContext", "webSearch", "image")
DEFAULT_THRESHOLD = 60000
# How CCR spells each provider type's endpoint after the base URL ccm wants.
ENDPOINTS = {"openai": ("/chat/completions",), "anthropic": ("/v1/messages",), "gemini": ("/models/", "/models"),
             "openai-responses": ("/responses",)}
APPENDED = {"openai": "/chat/completions", "anthropic": "/v1/messages", "gemini": "/models/{model}:…",
            "openai-responses": "/responses"}


@dataclass
class _Provider:
    plan: ProviderPlan
    source_name: str
    path: Path
    models: list[str]
    uses: list[tf.Use]
    model_uses: dict[str, list[tf.Use]] = field(default_factory=dict)


def convert(document: Document, report: Report) -> RoutePlan:
    reader = Reader(report)
    data = reader.object((), required=True)
    report.raise_if_failed()
    assert data is not None
    plan = RoutePlan(title=[f"Imported from claude-code-router's {document.name} by `ccm import ccr`.",
                            "The tests at the end pin where the old config sent each kind of request; "
                            "`ccm check` runs them."])
    timeout = _top_level(reader, data, plan)
    providers = _providers(reader, data, timeout)
    plan.providers = [p.plan for p in providers.values()]
    aliases = _Aliases(plan, providers, report)
    for provider in providers.values():
        for model in provider.models:
            aliases.base(provider, model)
    _route(reader, data, plan, providers, aliases)
    return plan


def _top_level(reader: Reader, data: dict[str, Any], plan: RoutePlan) -> str | None:
    report = reader.report
    for key in data:
        if key not in TOP_LEVEL:
            report.warn((key,), f"`{key}` is not a claude-code-router setting; ignored")
    inbound = reader.string(("APIKEY",))
    if inbound:
        auth, warning = router_key(inbound, "APIKEY")
        plan.auth = [auth]
        if warning:
            report.warn(("APIKEY",), warning)
    if reader.string(("CUSTOM_ROUTER_PATH",)):
        report.warn(("CUSTOM_ROUTER_PATH",), "CUSTOM_ROUTER_PATH: ccm runs no router script; write its decisions as "
                                             "rules in the `route` block (`ccm explain` shows which one matches)")
    if reader.list(("transformers",)):
        report.warn(("transformers",), "`transformers`: custom transformer plugins (JavaScript) are not carried over")
    if data.get("REWRITE_SYSTEM_PROMPT"):
        report.warn(("REWRITE_SYSTEM_PROMPT",), "REWRITE_SYSTEM_PROMPT: ccm does not rewrite the system prompt")
    if data.get("forceUseImageAgent"):
        report.warn(("forceUseImageAgent",), "forceUseImageAgent: ccm has no image agent; the `image` rule routes "
                                             "image requests to a model that reads images itself")
    if data.get("StatusLine"):
        report.warn(("StatusLine",), "StatusLine: CCR's status line is not carried over")
    if reader.string(("PROXY_URL",)):
        report.warn(("PROXY_URL",), "PROXY_URL: ccm uses the proxy the environment names: export HTTPS_PROXY "
                                    "(or ALL_PROXY) with it")
    host, port = reader.string(("HOST",)), reader.integer(("PORT",))
    if host not in (None, "127.0.0.1", "localhost") or port not in (None, 3456):
        where = ("HOST",) if host not in (None, "127.0.0.1", "localhost") else ("PORT",)
        report.warn(where, f"HOST/PORT: the address is chosen when ccm starts: `ccm run --host {host or '127.0.0.1'} "
                           f"--port {port or 3456}`")
    milliseconds = reader.number(("API_TIMEOUT_MS",))
    return duration_text(milliseconds) if milliseconds and milliseconds > 0 else None


def _providers(reader: Reader, data: dict[str, Any], timeout: str | None) -> dict[str, _Provider]:
    report = reader.report
    key = "Providers" if "Providers" in data or "providers" not in data else "providers"
    entries = reader.list((key,), required=True) or []
    names = Names()
    out: dict[str, _Provider] = {}
    for index, entry in enumerate(entries):
        path: Path = (key, index)
        if not isinstance(entry, dict):
            report.error(path, f"`{dotted(path)}` must be an object, not {describe(entry)}")
            continue
        reader.known_keys(path, entry, PROVIDER_FIELDS)
        source_name = reader.string((*path, "name"), required=True)
        raw_url = reader.string((*path, "api_base_url"))
        if not raw_url:
            report.error(path, f"provider `{source_name or index}` has no `api_base_url`: ccm needs the URL to send "
                               f"its requests to")
        if source_name is None or not raw_url:
            continue
        if source_name in out:
            report.error((*path, "name"), f"provider `{source_name}` is declared twice")
            continue
        transformer = reader.object((*path, "transformer")) or {}
        uses = tf.parse_uses(transformer.get("use"), (*path, "transformer", "use"), report)
        model_uses = {model: tf.parse_uses(spec.get("use") if isinstance(spec, dict) else spec,
                                           (*path, "transformer", model, "use"), report)
                      for model, spec in transformer.items() if model != "use"}
        kind = tf.wire_type(uses)
        name = names.claim(name_from(source_name, "provider"))
        missing = tf.unsupported_backend([*uses, *(u for us in model_uses.values() for u in us)])
        url = raw_url.rstrip("/") if missing else _url(raw_url, kind, name, (*path, "api_base_url"), report)
        plan = ProviderPlan(name, kind, url)
        raw_key = reader.string((*path, "api_key"))
        if not raw_key:
            report.warn((*path, "api_key"),
                        f"provider `{source_name}` has no api_key, so claude-code-router skipped it; "
                        f"ccm keeps it: export {env_name(name)}_API_KEY")
            plan.key = Env(f"{env_name(name)}_API_KEY")
        else:
            choice = provider_key(raw_key, name, raw_url)
            plan.key = choice.key
            if choice.warning:
                report.warn((*path, "api_key"), choice.warning)
        if timeout:
            plan.timeouts["total"] = timeout
        if missing is not None:
            report.warn(missing.path, f"provider `{source_name}`: transformer `{missing.name}` reaches a backend ccm "
                                      f"has no adapter for; the provider is written as `type {kind}` and will not "
                                      f"work as it is")
        if source_name != name:
            plan.comments.append(f"CCR's provider `{source_name}`.")
        models = reader.strings((*path, "models"))
        out[source_name] = _Provider(plan, source_name, path, models, uses, model_uses)
    return out


def _url(raw: str, kind: str, provider: str, path: Path, report: Report) -> Text:
    named = env_reference(raw)
    if named is not None:
        report.warn(path, f"provider `{provider}`: its URL comes from ${named}, which holds CCR's full endpoint URL; "
                          f"ccm wants the base URL (ccm adds `{APPENDED[kind]}`)")
        return Env(named)
    if has_interpolation(raw):
        variable = f"{env_name(provider)}_URL"
        report.warn(path, f"provider `{provider}`: its URL mixes `$VAR` references with text; export {variable} with "
                          f"the base URL (without `{APPENDED[kind]}`)")
        return Env(variable)
    for ending in ENDPOINTS[kind]:
        if raw.endswith(ending):
            return raw[: -len(ending)].rstrip("/")
    report.warn(path, f"provider `{provider}`: CCR posted to `{raw}` as written; ccm adds `{APPENDED[kind]}` to the "
                      f"url, so check it")
    return raw.rstrip("/")


class _Aliases:
    """One alias per upstream model, named after the model (prefixed by the provider where two share an id)."""

    def __init__(self, plan: RoutePlan, providers: dict[str, _Provider], report: Report) -> None:
        self.plan = plan
        self.providers = providers
        self.report = report
        self.names = Names()
        self.by_upstream: dict[tuple[str, str], str] = {}
        counts: dict[str, int] = {}
        for provider in providers.values():
            for model in dict.fromkeys(provider.models):
                counts[model] = counts.get(model, 0) + 1
        self.shared = {model for model, count in counts.items() if count > 1}

    def base(self, provider: _Provider, model: str, where: Path | None = None) -> str | None:
        """The alias of a provider's model; `where` is the route naming it (an unwritable id is then an error there,
        while one only listed in `models` is skipped with a warning)."""
        found = self.by_upstream.get((provider.source_name, model))
        if found is not None:
            return found
        if not is_model_id(model):
            message = (f"model `{model}` of provider `{provider.source_name}` cannot be written in a route file "
                       f"(characters outside letters, digits and `/:.-@+_`)")
            if where is None:
                self.report.warn((*provider.path, "models"), message + "; skipped")
            else:
                self.report.error(where, message)
            return None
        short = model.rsplit("/", 1)[-1]
        prefixed = model in self.shared and not short.startswith(provider.plan.name)
        wanted = name_from(f"{provider.plan.name}-{short}" if prefixed else short)
        alias = self.names.claim(wanted)
        effects = tf.effects(provider.uses, provider.model_uses.get(model, []), model, self.report,
                             provider.source_name)
        for note in effects.provider_notes:
            if note not in provider.plan.comments:
                provider.plan.comments.append(note)
        if provider.plan.type == "gemini":
            effects.quirk("google_search")  # CCR's gemini transformer answered web_search with Google Search
        self.plan.models.append(ModelPlan(alias, [DeploymentPlan(provider.plan.name, model)],
                                          max_output=effects.max_output, force=effects.force, quirks=effects.quirks,
                                          comments=effects.notes))
        self.by_upstream[(provider.source_name, model)] = alias
        return alias

    def copy(self, alias: str, scenario: str) -> str:
        """A second alias of the same model, for a scenario whose fallbacks differ from the first one's."""
        original = self.plan.model(alias)
        twin = self.names.claim(f"{alias}-{name_from(scenario)}")
        self.plan.models.append(replace(original, alias=twin, comments=[
            f"`{alias}` again, with the fallbacks CCR gave its `{scenario}` scenario."]))
        return twin


def _target(reader: Reader, path: Path, providers: dict[str, _Provider], aliases: _Aliases) -> str | None:
    """The alias for a `provider,model` value; unknown providers are errors at the value's line."""
    raw = reader.string(path)
    if raw is None:
        return None
    provider_name, comma, model = raw.partition(",")
    if not comma or not model:
        reader.report.error(path, f"`{dotted(path)}` must be `provider,model`, not `{raw}`")
        return None
    provider = providers.get(provider_name) or next(
        (p for name, p in providers.items() if name.lower() == provider_name.lower()), None)
    if provider is None:
        reader.report.error(path, f"`{dotted(path)}` names provider `{provider_name}`, which `Providers` does not "
                                  f"declare")
        return None
    if model not in provider.models:
        reader.report.warn(path, f"`{dotted(path)}`: model `{model}` is not in provider `{provider_name}`'s models; "
                                 f"it is used as written")
    return aliases.base(provider, model, path)


def _route(reader: Reader, data: dict[str, Any], plan: RoutePlan, providers: dict[str, _Provider],
           aliases: _Aliases) -> None:
    report = reader.report
    router = reader.object(("Router",), required=True) or {}
    if {"rules", "builtInRules"} & router.keys() and "default" not in router:
        report.error(("Router",), "this `Router` is claude-code-router 3's (`rules`, `builtInRules`); ccm import "
                                  "reads the 2.x config, whose Router names default/background/think/longContext/"
                                  "webSearch/image models")
        report.raise_if_failed()
    reader.known_keys(("Router",), router, ROUTER_FIELDS)
    fallback = reader.object(("fallback",)) or {}
    reader.known_keys(("fallback",), fallback, SCENARIOS)
    if router.get("default") is None and "Router" in data:
        report.error(("Router",), "`Router.default` is missing: it is where claude-code-router sends every request "
                                  "no scenario takes")
    for scenario in fallback:
        if scenario in SCENARIOS and router.get(scenario) is None:
            report.warn(("fallback", scenario), f"`fallback.{scenario}`: `Router.{scenario}` is not set, so CCR never "
                                                f"used it; ignored")
    chains: dict[str, list[str]] = {}
    targets: dict[str, str] = {}
    for scenario in SCENARIOS:
        if router.get(scenario) is None:
            continue
        alias = _target(reader, ("Router", scenario), providers, aliases)
        if alias is None:
            continue
        chain: list[str] = []
        for index, _ in enumerate(reader.list(("fallback", scenario)) or []):
            step = _target(reader, ("fallback", scenario, index), providers, aliases)
            if step is None:
                continue
            if aliases.plan.model(step).deployments == aliases.plan.model(alias).deployments:
                report.warn(("fallback", scenario, index), f"`fallback.{scenario}` falls back to its own model; "
                                                           f"dropped (ccm's `retry` tries a model again)")
            elif step not in chain:
                chain.append(step)
        if alias in chains and chains[alias] != chain:
            alias = aliases.copy(alias, scenario)
        chains[alias] = chain
        targets[scenario] = alias
    report.raise_if_failed()
    plan.fallbacks = [(alias, chain) for alias, chain in chains.items() if chain]
    threshold = reader.integer(("Router", "longContextThreshold")) or DEFAULT_THRESHOLD
    if "longContext" in targets:
        report.warn(("Router", "longContext"), "Router.longContext: CCR also took it when the session's previous "
                                               "request was over the threshold and this one over 20000 tokens; ccm "
                                               "counts each request alone")
    if "image" in targets:
        report.warn(("Router", "image"), "Router.image: CCR's image agent looked at the last message only; ccm's "
                                         "`image` matches an image anywhere in the conversation")
    _rules(plan, targets, threshold)
    _tests(plan, targets, threshold, providers, aliases)


def _rules(plan: RoutePlan, targets: dict[str, str], threshold: int) -> None:
    rules = plan.rules
    if "image" in targets:
        rules.append(RulePlan("image", targets["image"], "Router.image (CCR's image agent ran before its router)"))
    rules.append(RulePlan.direct("`/model provider,model` picks; CCR's <CCR-SUBAGENT-MODEL> tag is "
                                 "<CCM-SUBAGENT-MODEL>provider,model</CCM-SUBAGENT-MODEL> here"))
    if "longContext" in targets:
        rules.append(RulePlan(f"tokens > {tokens_text(threshold)}", targets["longContext"],
                              f"Router.longContext (longContextThreshold {threshold})"))
    if "background" in targets:
        plan.background = ["*claude*haiku*"]  # CCR: a model name containing both "claude" and "haiku"
        rules.append(RulePlan("background", targets["background"], "Router.background"))
    if "webSearch" in targets:
        rules.append(RulePlan("websearch", targets["webSearch"], "Router.webSearch"))
    if "think" in targets:
        rules.append(RulePlan("thinking", targets["think"], "Router.think"))
    rules.append(RulePlan("default", targets["default"], "Router.default"))


def _tests(plan: RoutePlan, targets: dict[str, str], threshold: int, providers: dict[str, _Provider],
           aliases: _Aliases) -> None:
    tests = plan.tests
    tests.append(TestPlan("default: the main agent", scenarios.plain(), targets["default"]))
    if "background" in targets:
        tests.append(TestPlan("background: haiku requests", scenarios.plain(scenarios.BACKGROUND_MODEL),
                              targets["background"]))
    if "think" in targets:
        tests.append(TestPlan("think: requests that ask for thinking", scenarios.thinking(), targets["think"]))
    if "webSearch" in targets:
        tests.append(TestPlan("webSearch: requests with the web_search tool", scenarios.web_search(),
                              targets["webSearch"]))
        if "think" in targets:
            tests.append(TestPlan("webSearch outranks think", scenarios.web_search(with_thinking=True),
                                  targets["webSearch"]))
    if "longContext" in targets:
        tests.append(TestPlan(f"longContext: over {threshold} tokens", scenarios.plain(), targets["longContext"],
                              tokens=threshold + 1))
        tests.append(TestPlan(f"{threshold} tokens is not long context", scenarios.plain(), targets["default"],
                              tokens=threshold))
        if "background" in targets:
            tests.append(TestPlan("longContext outranks background", scenarios.plain(scenarios.BACKGROUND_MODEL),
                                  targets["longContext"], tokens=threshold + 1))
    if "image" in targets:
        tests.append(TestPlan("image: a request with an image", scenarios.image(), targets["image"]))
    first = next(((p, p.models[0]) for p in providers.values() if p.models), None)
    if first is not None:
        provider, model = first
        alias = aliases.base(provider, model)
        if alias is not None:
            tests.append(TestPlan(f"/model {provider.source_name},{model} picks its model",
                                  scenarios.plain(f"{provider.plan.name},{model}"), alias))
