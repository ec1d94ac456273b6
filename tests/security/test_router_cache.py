"""The router's cache of the model names requests pick (issue 12, item 3): bounded in entries and in characters, and
never keeping a name that cannot be a model. Before, 40 distinct 10 MB names pushed a server's RSS from 619 to 991 MB
for good (the cache was capped at 1,024 entries, not by size)."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from ccm.route import PickCache, router_for, select_route
from ccm.table import Default, Direct, Literal_, Model, Provider, RoutingTable, Rule

pytestmark = pytest.mark.timeout(60)


def _table() -> RoutingTable:
    return RoutingTable(
        version="t",
        sources=("t.ccm",),
        providers={"p": Provider(name="p", type="openai", url=Literal_(value="http://127.0.0.1:1"), auth="bearer")},
        models={"m": Model(name="m", provider="p", model="x")},
        rules=(Rule(condition=Direct(), target=None, source="direct"),
               Rule(condition=Default(), target="m", source="default")),
    )


def _pick(table: RoutingTable, name: str) -> str:
    return select_route(table, {"model": name, "messages": [], "max_tokens": 1}).target.name


def test_huge_names_leave_nothing_behind() -> None:
    table = _table()
    router_for(table)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(40):
            assert _pick(table, f"p/{i}-" + "x" * 1_000_000).startswith("p/")  # routable, but no model is named so
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert retained < 1_000_000, f"the router kept {retained:,} bytes of 40 MB of model names"
    assert router_for(table)._picks.entries == {}


def test_the_cache_is_bounded_in_entries_and_characters() -> None:
    table = _table()
    cache = router_for(table)._picks
    for i in range(5000):
        _pick(table, f"p/{i:05}-" + "y" * 240)  # 248 characters: cacheable
        assert len(cache.entries) <= PickCache.MAX_ENTRIES
        assert cache.chars <= PickCache.MAX_CHARS
    assert cache.chars == sum(len(name) for name in cache.entries)
    assert all(len(name) <= PickCache.MAX_NAME for name in cache.entries)


def test_names_with_control_characters_are_not_cached() -> None:
    table = _table()
    for name in ("p/a\r\nSet-Cookie: x", "p/a\x00b", "m\n"):
        _pick(table, name)
    assert router_for(table)._picks.entries == {}


def test_repeated_names_are_cached_again_after_a_flood() -> None:
    table = _table()
    cache = router_for(table)._picks
    assert _pick(table, "m") == "m" and _pick(table, "claude-haiku-5-5") == "m"
    assert set(cache.entries) == {"m", "claude-haiku-5-5"}
    for i in range(3000):
        _pick(table, f"junk-{i}")
    assert "m" not in cache.entries  # the oldest went first
    _pick(table, "m")
    assert "m" in cache.entries
