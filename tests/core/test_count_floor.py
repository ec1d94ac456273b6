"""Runtime.count_floor: the smallest count any routing or dispatch decision of a table turns on."""

from __future__ import annotations

from ccm.core.runtime import count_floor
from ccm.table import Default, Model, Not, Rule, Tokens
from tests.core.conftest import make_table

MAIN = Model(name="main", provider="anth", model="claude-upstream-1")


def with_rules(*conditions: object, models: list[Model] | None = None):  # type: ignore[no-untyped-def]
    table = make_table(models=models)
    rules = tuple(Rule(condition=c, target="main", source="rule") for c in conditions)
    return table.model_copy(update={"rules": (*rules, Rule(condition=Default(), target="main", source="default"))})


def test_a_table_that_never_counts_has_no_floor() -> None:
    assert count_floor(make_table()) is None


def test_the_floor_is_the_smallest_threshold_or_context_nested_conditions_included() -> None:
    table = with_rules(Tokens(op=">", value=180_000), Not(operand=Tokens(op="<=", value=50_000)),
                       models=[MAIN.model_copy(update={"context": 200_000})])
    assert count_floor(table) == 50_000
    assert count_floor(make_table(models=[MAIN.model_copy(update={"context": 200_000})])) == 200_000


def test_an_equality_on_the_count_makes_every_count_matter() -> None:
    assert count_floor(with_rules(Tokens(op="==", value=180_000))) == 0
