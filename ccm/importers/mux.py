"""`ccm import ccm-toml`: claude-code-mux's config.toml → a route plan.

claude-code-mux (0.6) routes in this order, and the plan follows it:

    a `web_search…` tool                          → `websearch -> …`
    a <CCM-SUBAGENT-MODEL> tag, or a request that
      names a [[models]] entry                    → `direct` (ccm reads the same tag), plus `model == "…"` rules
                                                     for names that are not valid aliases
    thinking.type `enabled`                       → `thinking -> …`
    the model matches background_regex            → `background -> …`  with `settings { background … }`
    the model matches auto_map_regex (^claude-)   → `default -> …`

A [[models]] entry tries its mappings in priority order, the next on failure: the first mapping is the alias's
deployment and the others its fallback chain, in order (deployments would be balanced, not tried in order).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ccm.frozen import frozen
from ccm.importers import scenarios
from ccm.importers.keys import provider_key, router_key
from ccm.importers.plan import (
    DeploymentPlan,
    Env,
    ModelPlan,
    Names,
    ProviderPlan,
    RoutePlan,
    RulePlan,
    TestPlan,
    duration_text,
    env_name,
    is_model_id,
    name_from,
)
from ccm.importers.source import Document, Path, Reader, Report, describe, dotted

TOP_LEVEL = {"server", "router", "providers", "models"}
SERVER_FIELDS = {"port", "host", "api_key", "log_level", "timeouts"}
ROUTER_FIELDS = {"default", "background", "think", "websearch", "auto_map_regex", "background_regex"}
PROVIDER_FIELDS = {"name", "provider_type", "auth_type", "api_key", "oauth_provider", "project_id", "location",
                   "base_url", "models", "enabled"}
MODEL_FIELDS = {"name", "mappings"}
MAPPING_FIELDS = {"priority", "provider", "actual_model"}
AUTO_MAP = "^claude-"
BACKGROUND = "(?i)claude.*haiku"


@frozen
class _Type:
    type: str
    url: str
    honours_base_url: bool  # mux's presets ignore base_url; its generic types use it


TYPES: dict[str, _Type] = {
    "anthropic": _Type("anthropic", "https://api.anthropic.com", True),
    "openai": _Type("openai", "https://api.openai.com/v1", True),
    "gemini": _Type("gemini", "https://generativelanguage.googleapis.com/v1beta", True),
    "z.ai": _Type("anthropic", "https://api.z.ai/api/anthropic", False),
    "minimax": _Type("anthropic", "https://api.minimax.io/anthropic", False),
    "zenmux": _Type("anthropic", "https://zenmux.ai/api/anthropic", False),
    "kimi-coding": _Type("anthropic", "https://api.kimi.com/coding", False),
    "openrouter": _Type("openai", "https://openrouter.ai/api/v1", False),
    "deepinfra": _Type("openai", "https://api.deepinfra.com/v1/openai", False),
    "novita": _Type("openai", "https://api.novita.ai/v3/openai", False),
    "baseten": _Type("openai", "https://inference.baseten.co/v1", False),
    "together": _Type("openai", "https://api.together.xyz/v1", False),
    "fireworks": _Type("openai", "https://api.fireworks.ai/inference/v1", False),
    "groq": _Type("openai", "https://api.groq.com/openai/v1", False),
    "nebius": _Type("openai", "https://api.studio.nebius.ai/v1", False),
    "cerebras": _Type("openai", "https://api.cerebras.ai/v1", False),
    "moonshot": _Type("openai", "https://api.moonshot.cn/v1", False),
}
NO_ADAPTER = {"vertex-ai"}


def regex_glob(pattern: str) -> str | None:
    """A simple regex as a ccm glob (`^claude-` → `claude-*`, `(?i)claude.*haiku` → `*claude*haiku*`); None when
    the regex says more than a glob can (alternatives, classes, repeats)."""
    body = pattern.removeprefix("(?i)")
    start, end = body.startswith("^"), body.endswith("$") and not body.endswith("\\$")
    body = body[1 if start else 0: -1 if end else None]
    out = ""
    at = 0
    while at < len(body):
        if body.startswith(".*", at):
            out, at = out + "*", at + 2
        elif body[at] == "\\" and at + 1 < len(body) and not body[at + 1].isalnum():
            out, at = out + body[at + 1], at + 2
        elif body[at] == ".":
            out, at = out + "?", at + 1
        elif re.match(r"[A-Za-z0-9_ /:@-]", body[at]):
            out, at = out + body[at], at + 1
        else:
            return None
    glob = ("" if start else "*") + out + ("" if end else "*")
    return re.sub(r"\*+", "*", glob)


def convert(document: Document, report: Report) -> RoutePlan:
    reader = Reader(report)
    data = reader.object((), required=True)
    report.raise_if_failed()
    assert data is not None
    reader.known_keys((), data, TOP_LEVEL, strict=False)
    plan = RoutePlan(title=[f"Imported from claude-code-mux's {document.name} by `ccm import ccm-toml`.",
                            "The tests at the end pin where the old config sent each kind of request; "
                            "`ccm check` runs them."])
    timeouts = _server(reader, plan)
    providers = _providers(reader, plan, timeouts)
    models = _models(reader, plan, providers)
    reader.object(("router",), required=True)  # reported with the rest, before routing needs it
    report.raise_if_failed()
    _route(reader, plan, models, providers)
    return plan


def _server(reader: Reader, plan: RoutePlan) -> dict[str, str]:
    server = reader.object(("server",)) or {}
    reader.known_keys(("server",), server, SERVER_FIELDS, strict=False)
    key = reader.string(("server", "api_key"))
    if key:
        auth, warning = router_key(key, "server.api_key")
        plan.auth = [auth]
        reader.report.warn(("server", "api_key"), "server.api_key: claude-code-mux did not check it; ccm does: "
                                                  "clients must send it" + (f"; {warning}" if warning else ""))
    host, port = reader.string(("server", "host")), reader.integer(("server", "port"))
    if host not in (None, "127.0.0.1", "localhost") or port not in (None, 3456):
        reader.report.warn(("server", "port"), f"[server] host/port: the address is chosen when ccm starts: "
                                               f"`ccm run --host {host or '127.0.0.1'} --port {port or 3456}`")
    timeouts: dict[str, str] = {}
    for theirs, ours in (("connect_timeout_ms", "connect"), ("api_timeout_ms", "total")):
        value = reader.number(("server", "timeouts", theirs))
        if value and value > 0:
            timeouts[ours] = duration_text(value)
    return timeouts


def _providers(reader: Reader, plan: RoutePlan, timeouts: dict[str, str]) -> dict[str, str]:
    """Source provider name → ccm provider name, for the enabled providers ccm can serve."""
    report = reader.report
    names = Names()
    out: dict[str, str] = {}
    for index, entry in enumerate(reader.list(("providers",)) or []):
        path: Path = ("providers", index)
        if not isinstance(entry, dict):
            report.error(path, f"`{dotted(path)}` must be a table, not {describe(entry)}")
            continue
        reader.known_keys(path, entry, PROVIDER_FIELDS)
        source = reader.string((*path, "name"), required=True)
        kind = reader.string((*path, "provider_type"), required=True)
        if source is None or kind is None:
            continue
        if source in out:
            report.error((*path, "name"), f"provider `{source}` is declared twice")
            continue
        if reader.boolean((*path, "enabled")) is False:
            report.warn(path, f"provider `{source}` is disabled; not imported (mappings to it are skipped, as "
                              f"claude-code-mux skipped them)")
            continue
        if kind in NO_ADAPTER:
            report.warn((*path, "provider_type"), f"provider `{source}`: `{kind}` needs an adapter ccm does not "
                                                  f"have; not imported")
            continue
        spec = TYPES.get(kind)
        if spec is None:
            report.error((*path, "provider_type"), f"provider `{source}` has an unknown provider_type `{kind}`")
            continue
        base_url = reader.string((*path, "base_url"))
        url = base_url.rstrip("/") if base_url and spec.honours_base_url else spec.url
        name = names.claim(name_from(source, "provider"))
        provider = ProviderPlan(name, spec.type, url, timeouts=dict(timeouts))
        if reader.string((*path, "auth_type")) == "oauth":
            provider.key = Env(f"{env_name(name)}_API_KEY")
            report.warn((*path, "auth_type"), f"provider `{source}`: OAuth logins are not carried over; ccm sends "
                                              f"an API key: export {env_name(name)}_API_KEY")
        else:
            choice = provider_key(reader.string((*path, "api_key")), name, url)
            provider.key = choice.key
            if choice.warning:
                report.warn((*path, "api_key"), choice.warning)
            if choice.key is None and not reader.string((*path, "api_key")):
                report.error(path, f"provider `{source}` has no api_key (claude-code-mux refuses to start without one)")
        if source != name:
            provider.comments.append(f"claude-code-mux's provider `{source}`.")
        plan.providers.append(provider)
        out[source] = name
    return out


@dataclass
class _Model:
    name: str
    alias: str
    path: Path


def _models(reader: Reader, plan: RoutePlan, providers: dict[str, str]) -> dict[str, _Model]:
    report = reader.report
    names = Names()
    declared = {e.get("name") for e in reader.list(("providers",)) or [] if isinstance(e, dict)}
    out: dict[str, _Model] = {}
    for index, entry in enumerate(reader.list(("models",)) or []):
        path: Path = ("models", index)
        if not isinstance(entry, dict):
            report.error(path, f"`{dotted(path)}` must be a table, not {describe(entry)}")
            continue
        reader.known_keys(path, entry, MODEL_FIELDS)
        name = reader.string((*path, "name"), required=True)
        mappings = reader.list((*path, "mappings"), required=True)
        if name is None or mappings is None:
            continue
        steps: list[tuple[int, str, str]] = []
        for number, mapping in enumerate(mappings):
            where = (*path, "mappings", number)
            if not isinstance(mapping, dict):
                report.error(where, f"`{dotted(where)}` must be a table, not {describe(mapping)}")
                continue
            reader.known_keys(where, mapping, MAPPING_FIELDS)
            priority = reader.integer((*where, "priority"), required=True)
            provider = reader.string((*where, "provider"), required=True)
            actual = reader.string((*where, "actual_model"), required=True)
            if priority is None or provider is None or actual is None:
                continue
            if provider not in declared:
                report.error((*where, "provider"), f"model `{name}` maps to provider `{provider}`, which "
                                                   f"[[providers]] does not declare")
            elif provider not in providers:
                pass  # disabled or without an adapter: reported with the provider
            elif not is_model_id(actual):
                report.warn((*where, "actual_model"), f"model `{name}`: mapping `{actual}` is skipped (the id "
                                                      f"cannot be written in a route file)")
            else:
                steps.append((priority, providers[provider], actual))
        steps.sort(key=lambda step: step[0])  # stable: equal priorities keep the file's order, as mux's sort does
        if not steps:
            report.warn(path, f"model `{name}` has no mapping ccm can serve; not imported")
            continue
        alias = names.claim(name_from(name))
        first, rest = steps[0], steps[1:]
        model = ModelPlan(alias, [DeploymentPlan(first[1], first[2])])
        if alias != name:
            model.comments.append(f"claude-code-mux's model `{name}`.")
        plan.models.append(model)
        chain = list(dict.fromkeys(f"{p}/{m}" for _, p, m in rest if (p, m) != (first[1], first[2])))
        if chain:
            plan.fallbacks.append((alias, chain))
        out[name] = _Model(name, alias, path)
    return out


def _router_target(reader: Reader, key: str, models: dict[str, _Model]) -> str | None:
    path: Path = ("router", key)
    value = reader.string(path, required=key == "default")
    if value is None:
        return None
    if value not in models:
        reader.report.error(path, f"router.{key} names model `{value}`, which no [[models]] entry declares"
                                  + (" (or none of its mappings can be served)" if models else ""))
        return None
    return models[value].alias


def _glob(reader: Reader, key: str, default: str) -> str:
    pattern = reader.string(("router", key)) or default
    glob = regex_glob(pattern)
    if glob is None:
        reader.report.warn(("router", key), f"router.{key} `{pattern}` is more than a glob can say; ccm uses "
                                            f"`{regex_glob(default)}` (edit the rule to taste)")
        return regex_glob(default) or "*"
    if reader.string(("router", key)) and pattern.startswith("(?i)") and any(c.isalpha() for c in glob):
        reader.report.warn(("router", key), f"router.{key} `{pattern}` ignored case; ccm's glob `{glob}` does not")
    return glob


def _route(reader: Reader, plan: RoutePlan, models: dict[str, _Model], providers: dict[str, str]) -> None:
    report = reader.report
    router = reader.object(("router",)) or {}
    reader.known_keys(("router",), router, ROUTER_FIELDS)
    targets = {key: _router_target(reader, key, models) for key in ("default", "background", "think", "websearch")}
    report.raise_if_failed()
    auto_map = _glob(reader, "auto_map_regex", AUTO_MAP)
    background = _glob(reader, "background_regex", BACKGROUND)
    default = targets["default"]
    assert default is not None
    if targets["websearch"]:
        plan.rules.append(RulePlan("websearch", targets["websearch"], "[router] websearch"))
    plan.rules.append(RulePlan.direct("<CCM-SUBAGENT-MODEL> tags, and requests naming a [[models]] entry"))
    from fnmatch import fnmatchcase

    named = [m for m in models.values() if not fnmatchcase(m.name, auto_map)]
    for model in named:
        if model.name != model.alias:
            plan.rules.append(RulePlan(f"model == {_quoted(model.name)}", model.alias, "a [[models]] name"))
    if targets["think"]:
        plan.rules.append(RulePlan("thinking", targets["think"], "[router] think"))
        report.warn(("router", "think"), "router.think: claude-code-mux took only `thinking.type: enabled`; ccm's "
                                         "`thinking` also matches `adaptive`, which Claude Code 2.x sends on every "
                                         "main-agent request, so most requests now go to the think model: use "
                                         "`effort >= high` (or remove the rule) if that is not what you want")
    if targets["background"]:
        plan.background = [background]
        plan.rules.append(RulePlan("background", targets["background"], "[router] background"))
    plan.rules.append(RulePlan("default", default, f"[router] default (auto_map_regex, as a glob: `{auto_map}`)"))
    _tests(plan, targets, models, named, auto_map, background)


def _quoted(text: str) -> str:
    import json

    return json.dumps(text, ensure_ascii=False)


def _tests(plan: RoutePlan, targets: dict[str, str | None], models: dict[str, _Model], named: list[_Model],
           auto_map: str, background: str) -> None:
    from fnmatch import fnmatchcase

    tests = plan.tests
    if fnmatchcase(scenarios.MAIN_MODEL, auto_map) and targets["default"]:
        tests.append(TestPlan("default: Claude models are mapped to the default", scenarios.plain(),
                              targets["default"]))
    if targets["background"] and fnmatchcase(scenarios.BACKGROUND_MODEL, background):
        tests.append(TestPlan("background: haiku requests", scenarios.plain(scenarios.BACKGROUND_MODEL),
                              targets["background"]))
    if targets["think"]:
        tests.append(TestPlan("think: thinking requests", scenarios.thinking(), targets["think"]))
    if targets["websearch"]:
        tests.append(TestPlan("websearch: requests with the web_search tool", scenarios.web_search(),
                              targets["websearch"]))
        if targets["think"]:
            tests.append(TestPlan("websearch outranks think", scenarios.web_search(with_thinking=True),
                                  targets["websearch"]))
    for model in named:
        tests.append(TestPlan(f"a request for {model.name} gets it", scenarios.plain(model.name), model.alias))
    tagged = next((m for m in models.values() if m.name == m.alias), None)
    if tagged is not None:
        system = [{"type": "text", "text": "You are a subagent."},
                  {"type": "text", "text": f"<CCM-SUBAGENT-MODEL>{tagged.name}</CCM-SUBAGENT-MODEL>Review this."}]
        tests.append(TestPlan(f"a <CCM-SUBAGENT-MODEL> tag picks {tagged.name}",
                              {"model": scenarios.MAIN_MODEL, "system": system}, tagged.alias))
