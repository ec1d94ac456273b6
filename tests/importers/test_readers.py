"""YAML and TOML documents: their data, the line of each key, and syntax errors at their line."""

from __future__ import annotations

import pytest

from ccm.importers import ImportFailed
from ccm.importers.readers import load_toml, load_yaml

YAML = """model_list:
  - model_name: a
    litellm_params:
      model: openai/gpt-4o
  - model_name: b
    litellm_params: {model: anthropic/claude}
router_settings:
  num_retries: 2
"""

TOML = """[server]
port = 3456

[router]
default = "m"

[[providers]]
name = "one"
models = [
  "x",
]
[[providers]]
name = "two"

[[models]]
name = "m"

[[models.mappings]]
priority = 1
provider = "one"

[[models.mappings]]
"priority" = 2

[[models]]
name = "n"
[[models.mappings]]
provider = "two"
"""


def test_yaml_lines() -> None:
    document = load_yaml(YAML, "config.yaml")
    assert document.data["model_list"][1]["litellm_params"]["model"] == "anthropic/claude"
    assert document.line(("model_list", 0, "litellm_params", "model")) == 4
    assert document.line(("model_list", 1)) == 5
    assert document.line(("model_list", 1, "litellm_params", "model")) == 6
    assert document.line(("router_settings", "num_retries")) == 8


def test_yaml_syntax_error_at_its_line() -> None:
    with pytest.raises(ImportFailed) as failed:
        load_yaml("model_list:\n  - model_name: a\n   bad: [\n", "config.yaml")
    problem = failed.value.problems[0]
    assert problem.line == 3
    assert problem.message.startswith("not valid YAML: ")


def test_toml_lines_follow_arrays_of_tables() -> None:
    document = load_toml(TOML, "config.toml")
    assert document.data["models"][0]["mappings"][1]["priority"] == 2
    assert document.line(("server", "port")) == 2
    assert document.line(("providers", 0)) == 7
    assert document.line(("providers", 0, "name")) == 8
    assert document.line(("providers", 0, "models")) == 9
    assert document.line(("providers", 1, "name")) == 13
    assert document.line(("models", 0, "mappings", 0, "provider")) == 20
    assert document.line(("models", 0, "mappings", 1, "priority")) == 23
    assert document.line(("models", 1, "mappings", 0, "provider")) == 28


def test_toml_syntax_error_at_its_line() -> None:
    with pytest.raises(ImportFailed) as failed:
        load_toml('[router]\ndefault = "a"\nbroken =\n', "config.toml")
    problem = failed.value.problems[0]
    assert problem.line == 3
    assert problem.message.startswith("not valid TOML: ")
