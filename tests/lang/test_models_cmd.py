"""`ccm models`: the table as rows (one per deployment) or JSON, key state without key values, prices of any shape."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import BaseModel, ConfigDict

from ccm.cli.main import main
from ccm.cli.models_cmd import describe_models, prices
from ccm.compile import compile_source

ROUTES = """provider deepseek {
  type openai
  url  "https://api.deepseek.com/v1"
  key  env("DEEPSEEK_API_KEY")
}
provider backup {
  type openai
  url  "https://backup.example/v1"
  key  env("BACKUP_KEY", "fallback-key")
}
provider local {
  type openai
  url  "http://localhost:11434/v1"
}
model coder = deepseek/deepseek-chat weight 3, backup/deepseek-chat weight 1 {
  context    128k
  max_output 8k
  price      input 0.27 output 1.10 cache_read 0.07
  quirks     replay_reasoning
}
model small = local/qwen2.5-coder:7b {
  max_output 4096
}
route {
  background -> small
  default    -> coder
}
fallback coder -> local/qwen2.5-coder:14b
"""


@pytest.fixture
def routes(tmp_path: Path) -> Path:
    path = tmp_path / "routes.ccm"
    path.write_text(ROUTES)
    return path


def test_table_rows(routes: Path) -> None:
    result = CliRunner().invoke(main, ["models", str(routes)], env={"DEEPSEEK_API_KEY": "sk-secret-value"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["MODEL", "PROVIDER", "UPSTREAM", "CONTEXT", "MAX", "OUT", "PRICE", "$/M", "QUIRKS",
                                "KEY"]
    assert lines[1].split() == ["coder", "deepseek", "deepseek-chat", "(weight", "3)", "128k", "8k", "input", "0.27",
                                "output", "1.1", "cache_read", "0.07", "replay_reasoning", "set"]
    assert lines[2].split() == ["backup", "deepseek-chat", "(weight", "1)", "default"]
    assert lines[3].split() == ["small", "local", "qwen2.5-coder:7b", "-", "4096", "-", "-", "-"]
    assert lines[4].split()[:3] == ["local/qwen2.5-coder:14b", "local", "qwen2.5-coder:14b"]  # a fallback target
    assert "sk-secret-value" not in result.output and "fallback-key" not in result.output
    # columns line up: every row's provider starts where the header's does
    column = lines[0].index("PROVIDER")
    assert all(line[column - 2:column] == "  " for line in lines[1:])


def test_unset_key_names_its_variable(routes: Path) -> None:
    result = CliRunner().invoke(main, ["models", str(routes)], env={"DEEPSEEK_API_KEY": ""})
    assert "unset DEEPSEEK_API_KEY" in result.stdout.splitlines()[1]


def test_json(routes: Path) -> None:
    result = CliRunner().invoke(main, ["models", str(routes), "--format", "json"], env={"DEEPSEEK_API_KEY": "x"})
    assert result.exit_code == 0, result.output
    models = json.loads(result.stdout)
    coder = models[0]
    assert coder["name"] == "coder" and coder["balance"] == "weighted"
    assert coder["context"] == 128000 and coder["max_output"] == 8000
    assert coder["price"] == {"input": "0.27", "output": "1.1", "cache_read": "0.07"}
    assert coder["deployments"] == [
        {"provider": "deepseek", "model": "deepseek-chat", "weight": 3, "type": "openai",
         "key": {"source": "env", "env": "DEEPSEEK_API_KEY", "state": "set"}},
        {"provider": "backup", "model": "deepseek-chat", "weight": 1, "type": "openai",
         "key": {"source": "env", "env": "BACKUP_KEY", "state": "default"}},
    ]
    assert models[1]["deployments"][0]["key"] == {"source": "none"}
    assert [m["declared"] for m in models] == [True, True, False]


def test_default_file_and_compile_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("CCM_ROUTES", raising=False)
    missing = CliRunner().invoke(main, ["models"])
    assert missing.exit_code == 1
    assert "no route file" in missing.stderr and "`ccm init`" in missing.stderr
    Path("routes.ccm").write_text(ROUTES.replace("default    -> coder", "default    -> codr"))
    broken = CliRunner().invoke(main, ["models"])
    assert broken.exit_code == 1
    assert "error: unknown model `codr`" in broken.stderr and "^^^^" in broken.stderr


class _LedgerPrice(BaseModel):
    """The shape the ledger work gives `Price`: Decimal amounts and more token classes."""

    model_config = ConfigDict(frozen=True)
    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write_5m: Decimal | None = None
    cache_write_1h: Decimal | None = None


def test_prices_are_read_field_by_field() -> None:
    table = compile_source(ROUTES, "routes.ccm", environ={}).table
    assert table is not None
    coder = table.models["coder"]
    other = coder.model_copy(update={"price": _LedgerPrice(input=Decimal("0.270"), output=Decimal("1.10"),
                                                           cache_write_1h=Decimal("0.54"))})
    assert prices(other) == {"input": "0.27", "output": "1.1", "cache_write_1h": "0.54"}
    described = describe_models(table.model_copy(update={"models": {"coder": other}}), {})
    assert described[0]["price"] == {"input": "0.27", "output": "1.1", "cache_write_1h": "0.54"}
