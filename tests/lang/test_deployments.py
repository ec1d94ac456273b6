"""Deployments (`model NAME = a/m weight 3, b/m weight 1`) and breaker settings in the language: what they compile
to, what the checks that look at a model's providers make of them, and how `ccm fmt` prints them."""

from __future__ import annotations

from collections.abc import Callable

from ccm import table as t
from ccm.compile.check import Checked
from ccm.dsl.format import format_source

Compile = Callable[..., Checked]

PROVIDERS = """\
provider a {
  type openai
  url "http://127.0.0.1:1/v1"
}
provider b {
  type anthropic
  url "http://127.0.0.1:2"
}
"""


def test_several_deployments_keep_the_first_as_the_models_provider(compile_text: Compile) -> None:
    result = compile_text(PROVIDERS + "model m = a/x weight 3, b/y { max_output 8k  balance least-busy }\n"
                          "route {\n  default -> m\n}\n")
    assert result.errors == () and result.table is not None
    model = result.table.models["m"]
    assert (model.provider, model.model, model.balance) == ("a", "x", "least-busy")
    assert [(d.provider, d.model, d.weight) for d in model.deployments] == [("a", "x", 3), ("b", "y", 1)]


def test_one_deployment_leaves_the_model_as_it_always_was(compile_text: Compile) -> None:
    result = compile_text(PROVIDERS + "model m = a/x { max_output 8k }\nroute {\n  default -> m\n}\n")
    assert result.table is not None
    model = result.table.models["m"]
    assert (model.deployments, model.balance) == ((), "weighted")


def test_a_provider_serving_only_a_later_deployment_is_used(compile_text: Compile) -> None:
    model = "model m = b/x, a/y { max_output 8k }\n"
    text = "settings { direct off }\n" + PROVIDERS + model + "route {\n  default -> m\n}\n"
    result = compile_text(text)
    assert result.table is not None
    assert not any("never used" in w.message for w in result.warnings)


def test_a_translated_later_deployment_needs_max_output(compile_text: Compile) -> None:
    result = compile_text(PROVIDERS + "model m = b/x, a/y\nroute {\n  default -> m\n}\n")
    assert [w.message for w in result.warnings] == ["model `m` has no `max_output`"]


def test_the_long_context_check_reads_the_alias_every_deployment_shares(compile_text: Compile) -> None:
    model = "model m = a/x, b/y { context 32k  max_output 8k }\n"
    text = PROVIDERS + model + "route {\n  tokens > 100k -> m\n  default -> m\n}\n"
    result = compile_text(text)
    assert [e.message for e in result.errors] == [
        "`m` has a context window of 32,000 tokens, but this rule sends it requests of 100,001 tokens or more"
    ]


def test_breaker_policies_file_wide_and_per_provider(compile_text: Compile) -> None:
    text = PROVIDERS.replace('url "http://127.0.0.1:2"', 'url "http://127.0.0.1:2"\n  breaker off')
    result = compile_text("breaker 3 failures cooldown 5s..1m\n" + text + "route {\n  default -> b/x\n}\n")
    assert result.table is not None
    table = result.table
    assert table.breaker == t.BreakerPolicy(failures=3, cooldown=5.0, max_cooldown=60.0)
    assert table.breaker_for("a") == table.breaker  # no breaker of its own: the file's
    assert table.breaker_for("b") == t.BreakerPolicy(enabled=False)


def test_a_single_cooldown_is_fixed_and_unwritten_parts_take_the_defaults(compile_text: Compile) -> None:
    result = compile_text("breaker cooldown 30s\n" + PROVIDERS + "route {\n  default -> b/x\n}\n")
    assert result.table is not None
    assert result.table.breaker == t.BreakerPolicy(failures=5, cooldown=30.0, max_cooldown=30.0)


FORMATTED = """\
breaker 3 failures cooldown 5s..1m
provider a {
  type    openai
  url     "http://127.0.0.1:1/v1"
  breaker off  # never skip a
}
model one = a/x weight 3, a/y weight 1 {
  balance least-busy
}
model two = a/x,  # the first line
    # a comment between deployments
    a/y weight 2 {
  max_output 8k
}
model three = a/x,
    a/y
route {
  default -> one
}
"""


def test_fmt_prints_deployments_and_breakers_canonically_and_keeps_line_breaks() -> None:
    messy = FORMATTED.replace("breaker 3", "breaker   3").replace("weight 3, a/y", "weight 3 ,a/y") \
        .replace("  type    openai", "  type openai").replace("  breaker off", "breaker off") \
        .replace("    a/y weight 2", "          a/y   weight 2")
    assert messy != FORMATTED
    assert format_source(messy, "routes.ccm") == FORMATTED
    assert format_source(FORMATTED, "routes.ccm") == FORMATTED
