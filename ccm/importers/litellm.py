"""`ccm import litellm`: a LiteLLM proxy config.yaml → a route plan.

LiteLLM routes by the requested model name: each `model_name` of `model_list` is a model group, and entries that
share one are its deployments, load-balanced. In the plan:

    model_list entries with one model_name     → `model NAME = prov/a, prov2/b { … }` (weights from weight/rpm/tpm)
    a request naming the group                 → `model == "name" -> NAME`, and a test for it
    router_settings.model_group_alias          → `model == "alias" -> NAME`, and a test
    a `*` pattern model_name                   → `model ~ "pattern" -> NAME` (after the exact names, as LiteLLM)
    fallbacks / default_fallbacks              → `fallback NAME -> …`
    num_retries, retry_after, allowed_fails…   → the file-wide `retry` and `breaker`
    routing_strategy                           → `balance` (simple-shuffle: weighted; least-busy)
    master_key                                 → `settings { auth env(…) }`

Providers are made from the deployments' prefix, api_base and api_key: one per distinct combination.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ccm.importers import scenarios
from ccm.importers.keys import env_reference, provider_key, router_key
from ccm.importers.litellm_providers import NO_ADAPTER, PREFIXES, openai_compatible_url, split_model
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
)
from ccm.importers.source import Document, Path, Reader, Report, describe, dotted

SECTIONS = {"model_list", "router_settings", "litellm_settings", "general_settings", "environment_variables",
            "credential_list", "include"}
ENTRY_FIELDS = {"model_name", "litellm_params", "model_info", "tpm", "rpm"}
# litellm_params a deployment turns into provider or model settings; the sampling ones become `force`.
PARAMS = {"model", "api_base", "base_url", "api_key", "custom_llm_provider", "rpm", "tpm", "weight", "max_tokens",
          "timeout", "stream_timeout", "extra_headers", "max_parallel_requests", "input_cost_per_token",
          "output_cost_per_token", "cache_read_input_token_cost", "cache_creation_input_token_cost", "model_info"}
SAMPLING = {"temperature", "top_p", "top_k", "seed", "stop", "presence_penalty", "frequency_penalty",
            "reasoning_effort", "max_completion_tokens", "response_format", "thinking"}
PRICES = (("input", "input_cost_per_token"), ("output", "output_cost_per_token"),
          ("cache_read", "cache_read_input_token_cost"), ("cache_write", "cache_creation_input_token_cost"))
BALANCE = {"simple-shuffle": "weighted", "least-busy": "least-busy"}
SECRET_HEADERS = ("key", "auth", "token", "secret", "cookie")
# router_settings (and their litellm_settings twins) the plan translates; the rest are reported.
TRANSLATED = {"routing_strategy", "num_retries", "retry_after", "timeout", "request_timeout", "fallbacks",
              "default_fallbacks", "context_window_fallbacks", "content_policy_fallbacks", "allowed_fails",
              "cooldown_time", "model_group_alias", "master_key"}


@dataclass
class _Deployment:
    path: Path
    provider: str
    model: str
    weight: int | None
    params: dict[str, Any]
    info: dict[str, Any]


@dataclass
class _Group:
    name: str
    alias: str
    path: Path
    deployments: list[_Deployment] = field(default_factory=list)


def convert(document: Document, report: Report) -> RoutePlan:
    reader = Reader(report)
    data = reader.object((), required=True)
    report.raise_if_failed()
    assert data is not None
    reader.known_keys((), data, SECTIONS, strict=False)
    plan = RoutePlan(title=[f"Imported from LiteLLM's {document.name} by `ccm import litellm`.",
                            "Each model group is an alias; the tests at the end pin which group answers each model "
                            "name, as LiteLLM did. `ccm check` runs them."])
    settings = _settings(reader, data)
    providers = _Providers(plan, report, settings.get("timeout") or settings.get("request_timeout"))
    skipped: set[str] = set()
    groups = _groups(reader, providers, skipped)
    report.raise_if_failed()
    if not groups:
        report.error(("model_list",), "no model group could be imported: ccm needs at least one model to route to")
        report.raise_if_failed()
    _models(reader, plan, groups, settings)
    _routing(reader, plan, groups, settings, skipped)
    _auth(reader, data, plan, settings)
    return plan


class _Settings:
    """The router settings the plan translates, each with the path it was written at (for the report's lines)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.paths: dict[str, Path] = {}

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def path(self, key: str) -> Path:
        return self.paths.get(key, ("router_settings",))


def _settings(reader: Reader, data: dict[str, Any]) -> _Settings:
    """router_settings over litellm_settings (LiteLLM reads both); the untranslated keys are reported."""
    merged = _Settings()
    for section in ("litellm_settings", "router_settings"):
        values = reader.object((section,)) or {}
        for key, value in values.items():
            where = (section, key)
            if key in TRANSLATED:
                merged.values[key] = value
                merged.paths[key] = where
            elif key.startswith("redis_") or key in ("cache", "cache_params"):
                reader.report.warn(where, f"`{dotted(where)}`: ccm keeps breaker state in each process and caches "
                                          f"nothing; not carried over")
            elif key in ("drop_params", "set_verbose", "telemetry", "json_logs", "enable_pre_call_checks"):
                pass  # no effect on where requests go: ccm translates each request for its upstream anyway
            else:
                reader.report.warn(where, f"`{dotted(where)}` is not carried over (ccm has no such setting)")
    for key in (reader.object(("general_settings",)) or {}):
        if key != "master_key":
            reader.report.warn(("general_settings", key), f"`general_settings.{key}` is not carried over")
    variables = reader.object(("environment_variables",)) or {}
    if variables:
        reader.report.warn(("environment_variables",), "environment_variables: ccm reads the environment it runs "
                                                      "in; export " + ", ".join(sorted(variables)) + " yourself")
    return merged


class _Providers:
    """One ccm provider per distinct (prefix, api_base, key): `openai`, then `openai-2` for the next."""

    def __init__(self, plan: RoutePlan, report: Report, timeout: Any) -> None:
        self.plan = plan
        self.report = report
        self.names = Names()
        self.found: dict[tuple[object, ...], str] = {}
        self.timeout = duration_text(float(timeout) * 1000) if isinstance(timeout, (int, float)) and timeout else None

    def provider(self, reader: Reader, path: Path, prefix: str, params: dict[str, Any]) -> str | None:
        spec = PREFIXES[prefix]
        raw_base = params.get("api_base") or params.get("base_url")
        url: Text
        if raw_base is None:
            if spec.url is None:
                self.report.error((*path, "model"), f"`{prefix}/` needs an `api_base`: LiteLLM has no default URL "
                                                    f"for it, and neither has ccm")
                return None
            url = openai_compatible_url(prefix, spec.url) if spec.type == "openai" else spec.url
        elif not isinstance(raw_base, str):
            self.report.error((*path, "api_base"), f"`api_base` must be a string, not {describe(raw_base)}")
            return None
        elif env_reference(raw_base) is not None:
            url = Env(env_reference(raw_base) or "")
        else:
            url = raw_base.rstrip("/").removesuffix("/v1/messages") if spec.type == "anthropic" else raw_base
            url = openai_compatible_url(prefix, url) if spec.type == "openai" else url.rstrip("/")
        raw_key = reader.string((*path, "api_key"))
        raw_headers = params.get("extra_headers")
        headers: dict[str, Any] = raw_headers if isinstance(raw_headers, dict) else {}
        timeout = params.get("timeout")
        identity = (prefix, str(url), raw_key, tuple(sorted((str(k), str(v)) for k, v in headers.items())), timeout)
        if identity in self.found:
            return self.found[identity]
        name = self.names.claim(name_from(prefix))
        key = provider_key(raw_key, name, url if isinstance(url, str) else None, default_env=spec.key_env)
        if key.warning:
            self.report.warn((*path, "api_key"), key.warning)
        plan = ProviderPlan(name, spec.type, url, key.key)
        for header, value in headers.items():
            named = env_reference(str(value))
            if named is None and any(word in str(header).lower() for word in SECRET_HEADERS):
                # a credential in a header is a key like any other: it stays out of the file
                named = f"{env_name(name)}_{env_name(str(header))}"
                self.report.warn((*path, "extra_headers", header), f"provider `{name}`: header `{header}` was "
                                                                   f"written in the file; it is not copied: export "
                                                                   f"{named} with it")
            plan.headers[str(header)] = Env(named) if named else str(value)
        total = duration_text(float(timeout) * 1000) if isinstance(timeout, (int, float)) and timeout else self.timeout
        if total:
            plan.timeouts["total"] = total
        concurrency = params.get("max_parallel_requests")
        if isinstance(concurrency, int) and concurrency > 0:
            plan.concurrency = concurrency
        self.plan.providers.append(plan)
        self.found[identity] = name
        return name


def _groups(reader: Reader, providers: _Providers, skipped: set[str]) -> list[_Group]:
    """The model groups with at least one deployment ccm can serve; `skipped` gets the names of the others."""
    report = reader.report
    groups: dict[str, _Group] = {}
    aliases = Names()
    for index, entry in enumerate(reader.list(("model_list",), required=True) or []):
        path: Path = ("model_list", index)
        if not isinstance(entry, dict):
            report.error(path, f"`{dotted(path)}` must be an object, not {describe(entry)}")
            continue
        reader.known_keys(path, entry, ENTRY_FIELDS)
        name = reader.string((*path, "model_name"), required=True)
        params = reader.object((*path, "litellm_params"), required=True)
        if name is None or params is None:
            continue
        params_path = (*path, "litellm_params")
        skipped.add(name)
        model = reader.string((*params_path, "model"), required=True)
        if model is None:
            continue
        if "*" in model:
            report.warn((*params_path, "model"), f"`{model}`: LiteLLM's wildcard passthrough is not carried over; in "
                                                 f"ccm a request may name `provider/model` itself (`direct`)")
            continue
        prefix, model_id = split_model(model, reader.string((*params_path, "custom_llm_provider")))
        if prefix is None or prefix in NO_ADAPTER or prefix not in PREFIXES:
            why = "ccm has no adapter for it" if prefix in NO_ADAPTER else "ccm cannot tell which API it is"
            report.warn((*params_path, "model"), f"model group `{name}`: deployment `{model}` is skipped ({why})")
            continue
        if not is_model_id(model_id):
            report.warn((*params_path, "model"), f"model group `{name}`: deployment `{model}` is skipped (its id "
                                                 f"cannot be written in a route file)")
            continue
        for key in params:
            if key not in PARAMS and key not in SAMPLING:
                report.warn((*params_path, key), f"`{dotted((*params_path, key))}` is not carried over")
        provider = providers.provider(reader, params_path, prefix, params)
        if provider is None:
            continue
        weight = next((value for key in ("weight", "rpm", "tpm")
                       for value in (params.get(key), entry.get(key) if key != "weight" else None)
                       if isinstance(value, int) and not isinstance(value, bool) and value > 0), None)
        raw_info = entry.get("model_info")
        info: dict[str, Any] = raw_info if isinstance(raw_info, dict) else {}
        group = groups.get(name)
        if group is None:
            group = groups[name] = _Group(name, aliases.claim(name_from(name)), path)
        group.deployments.append(_Deployment(path, provider, model_id, weight, params, info))
    skipped.difference_update(groups)
    return list(groups.values())


def _per_million(value: Any) -> Decimal | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return (Decimal(str(value)) * 1_000_000).normalize()
    return None


def _models(reader: Reader, plan: RoutePlan, groups: list[_Group], settings: _Settings) -> None:
    balance = settings.get("routing_strategy")
    if balance is not None and balance not in BALANCE:
        reader.report.warn(settings.path("routing_strategy"), f"routing_strategy `{balance}` has no ccm equivalent; "
                                                              f"deployments are picked at random by weight")
    for group in groups:
        first = group.deployments[0]
        model = ModelPlan(group.alias, _weighted(group.deployments))
        params, info = first.params, first.info
        limit = params.get("max_tokens") or info.get("max_output_tokens") or info.get("max_tokens")
        if isinstance(limit, int) and limit > 0:
            model.max_output = limit
        window = info.get("max_input_tokens")
        if isinstance(window, int) and window > 0:
            model.context = window
        for ours, theirs in PRICES:
            price = _per_million(params.get(theirs, info.get(theirs)))
            if price is not None:
                model.price[ours] = price
        if model.price and not {"input", "output"} <= model.price.keys():
            model.price = {}  # ccm needs both; a half price would be an error
        model.force = {key: value for key, value in params.items() if key in SAMPLING}
        if len(group.deployments) > 1:
            if isinstance(balance, str) and balance in BALANCE and BALANCE[balance] != "weighted":
                model.balance = BALANCE[balance]
            if any(_options(d) != _options(first) for d in group.deployments[1:]):
                reader.report.warn(group.path, f"model group `{group.name}`: its deployments set different limits "
                                               f"or parameters; ccm applies one set to every deployment (the "
                                               f"first's)")
        if group.alias != group.name:
            model.comments.append(f"LiteLLM's model group `{group.name}`.")
        plan.models.append(model)


def _weighted(deployments: list[_Deployment]) -> list[DeploymentPlan]:
    """The group's deployments with their weights: one entry per upstream (LiteLLM lists the same one twice to give
    it twice the traffic, ccm adds the weights up), reduced by their common divisor, and none when all are equal."""
    merged: dict[tuple[str, str], int] = {}
    for deployment in deployments:
        key = (deployment.provider, deployment.model)
        merged[key] = merged.get(key, 0) + (deployment.weight or 1)
    divisor = math.gcd(*merged.values())
    if len(set(merged.values())) == 1:
        return [DeploymentPlan(provider, model) for provider, model in merged]
    return [DeploymentPlan(provider, model, weight // divisor) for (provider, model), weight in merged.items()]


def _options(deployment: _Deployment) -> dict[str, Any]:
    keys = {"max_tokens", *SAMPLING, *(theirs for _, theirs in PRICES)}
    return {k: v for k, v in deployment.params.items() if k in keys}


def _routing(reader: Reader, plan: RoutePlan, groups: list[_Group], settings: _Settings,
             skipped: set[str]) -> None:
    report = reader.report
    by_name = {g.name: g for g in groups}
    exact = [g for g in groups if "*" not in g.name]
    patterns = [g for g in groups if "*" in g.name]
    for group in exact:
        plan.rules.append(RulePlan(f'model == {_quoted(group.name)}', group.alias))
        plan.tests.append(TestPlan(f"{group.name} goes to its model group", scenarios.plain(group.name), group.alias))
    aliases = settings.get("model_group_alias") or {}
    if not isinstance(aliases, dict):
        report.error(settings.path("model_group_alias"), "`model_group_alias` must map names to model groups")
        aliases = {}
    for alias_name, target in aliases.items():
        group_name = target.get("model") if isinstance(target, dict) else target
        where = (*settings.path("model_group_alias"), alias_name)
        if group_name in skipped:
            report.warn(where, f"model_group_alias `{alias_name}`: model group `{group_name}` was not imported")
            continue
        if group_name not in by_name:
            report.error(where, f"model_group_alias `{alias_name}` names model group `{group_name}`, which "
                                f"model_list does not declare")
            continue
        group = by_name[group_name]
        plan.rules.append(RulePlan(f"model == {_quoted(alias_name)}", group.alias, "model_group_alias"))
        plan.tests.append(TestPlan(f"{alias_name} is an alias of {group.name}", scenarios.plain(alias_name),
                                   group.alias))
    for group in patterns:
        plan.rules.append(RulePlan(f"model ~ {_quoted(group.name)}", group.alias))
        example = group.name.replace("*", "x")
        if example not in by_name:
            plan.tests.append(TestPlan(f"{example} matches {group.name}", scenarios.plain(example), group.alias))
    plan.rules.append(RulePlan.direct("a request may also name an alias or provider/model itself"))
    default = (exact or patterns)[0]
    plan.rules.append(RulePlan("default", default.alias, "LiteLLM answered 400 to a name no group had"))
    report.warn(default.path, f"LiteLLM rejected a model name no model group had; ccm sends such requests to "
                              f"`{default.alias}` (the `default` rule): change it if you want another")
    _fallbacks(reader, plan, groups, settings, skipped)
    _reliability(reader, plan, settings)


def _quoted(text: str) -> str:
    import json

    return json.dumps(text, ensure_ascii=False)


def _chain_list(reader: Reader, settings: _Settings, key: str) -> list[tuple[Path, str, list[str]]]:
    """`[{"a": ["b", "c"]}, …]` → [(path, "a", ["b", "c"])]; anything else is an error at its line."""
    raw = settings.get(key)
    if raw is None:
        return []
    path = settings.path(key)
    out: list[tuple[Path, str, list[str]]] = []
    items = raw if isinstance(raw, list) else [raw]
    for index, item in enumerate(items):
        where = (*path, index) if isinstance(raw, list) else path
        if not isinstance(item, dict):
            reader.report.error(where, f"`{key}` entries must map a model group to a list of model groups")
            continue
        for head, chain in item.items():
            steps = chain if isinstance(chain, list) else [chain]
            if not all(isinstance(step, str) for step in steps):
                reader.report.error(where, f"`{key}`: the fallbacks of `{head}` must be model group names")
                continue
            out.append((where, str(head), [str(step) for step in steps]))
    return out


def _fallbacks(reader: Reader, plan: RoutePlan, groups: list[_Group], settings: _Settings,
               skipped: set[str]) -> None:
    by_name = {g.name: g for g in groups}
    chains: dict[str, list[str]] = {}

    def aliases_of(where: Path, names: list[str], head: str | None) -> list[str]:
        out: list[str] = []
        for name in names:
            if name in skipped:
                reader.report.warn(where, f"fallback to model group `{name}` dropped: it was not imported")
            elif name not in by_name:
                reader.report.error(where, f"fallback names model group `{name}`, which model_list does not declare")
            elif name != head and by_name[name].alias not in out:
                out.append(by_name[name].alias)
        return out

    for where, head, steps in _chain_list(reader, settings, "fallbacks"):
        if head in skipped:
            reader.report.warn(where, f"the fallbacks of model group `{head}` are dropped: it was not imported")
            continue
        if head not in by_name:
            reader.report.error(where, f"fallbacks of `{head}`: model_list declares no such model group")
            continue
        chains[by_name[head].alias] = aliases_of(where, steps, head)
    defaults = settings.get("default_fallbacks")
    if isinstance(defaults, list):
        for group in groups:
            if group.alias not in chains:
                chain = aliases_of(settings.path("default_fallbacks"), [str(d) for d in defaults], group.name)
                if chain:
                    chains[group.alias] = chain
    for key in ("context_window_fallbacks", "content_policy_fallbacks"):
        if settings.get(key):
            reader.report.warn(settings.path(key), f"`{key}`: ccm's fallbacks apply to every failure; these "
                                                        f"chains are not carried over (a `tokens >` rule routes long "
                                                        f"prompts before they fail)")
    plan.fallbacks = [(head, chain) for head, chain in chains.items() if chain]


def _reliability(reader: Reader, plan: RoutePlan, settings: _Settings) -> None:
    retries = settings.get("num_retries")
    wait = settings.get("retry_after")
    if isinstance(retries, int) and retries >= 0:
        plan.retry = str(retries)
        if isinstance(wait, (int, float)) and wait > 0:
            low = duration_text(wait * 1000)
            plan.retry += f" backoff {low}..{duration_text(max(wait, 8) * 1000)}"
    failures, cooldown = settings.get("allowed_fails"), settings.get("cooldown_time")
    parts: list[str] = []
    if isinstance(failures, int) and failures >= 0:
        parts.append(f"{failures + 1} failures")  # LiteLLM cools a deployment down once it fails more than this
    if isinstance(cooldown, (int, float)) and cooldown > 0:
        parts.append(f"cooldown {duration_text(cooldown * 1000)}")
    if parts:
        plan.breaker = " ".join(parts)


def _auth(reader: Reader, data: dict[str, Any], plan: RoutePlan, settings: _Settings) -> None:
    path: Path = ("general_settings", "master_key")
    raw = reader.string(path)
    if raw is None and isinstance(settings.get("master_key"), str):
        raw, path = settings.get("master_key"), settings.path("master_key")
    if raw:
        auth, warning = router_key(raw, "master_key")
        plan.auth = [auth]
        if warning:
            reader.report.warn(path, warning)
