"""docs/migrating.md shows old configs beside what `ccm import` makes of them: both halves must stay true."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.importers.conftest import assert_checks, run_import, squashed

DOC = Path(__file__).resolve().parents[2] / "docs" / "migrating.md"
BLOCK = re.compile(r"<td>\s*```(json|yaml|toml)\n(.*?)```\s*</td><td>\s*```\n(.*?)```", re.S)
KIND = {"json": "ccr", "yaml": "litellm", "toml": "ccm-toml"}


def _pairs() -> list[tuple[str, str, str]]:
    return [(KIND[lang], source, shown) for lang, source, shown in BLOCK.findall(DOC.read_text())]


def test_the_doc_has_one_pair_per_tool() -> None:
    assert sorted(kind for kind, _, _ in _pairs()) == ["ccm-toml", "ccr", "litellm"]


@pytest.mark.parametrize(("kind", "source", "shown"), _pairs(), ids=lambda v: v if v in KIND.values() else "")
def test_each_old_config_imports_into_what_the_doc_shows(kind: str, source: str, shown: str) -> None:
    imported = run_import(kind, source, "config")
    assert_checks(imported.text)
    generated = {line.split("#")[0].strip() for line in squashed(imported.text).splitlines()}
    # every non-comment line the doc shows (tests are abridged with `{ … }`) is a line of the real output
    for line in squashed(shown).splitlines():
        code = line.split("#")[0].strip()
        if code and "…" not in code:
            assert code in generated, f"the doc shows `{code}`, which ccm import no longer writes"
