"""The ledger's behaviour, the same suite on SQLite and PostgreSQL (see conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from typing import Any, Literal

import pytest

from ccm.ledger.errors import BadInput, DuplicateRequest, LedgerError, UnknownKey
from ccm.ledger.ledger import Ledger
from ccm.ledger.records import NewKey, limits_of
from ccm.ledger.refusals import KeyRefused, OutOfCredit, OverBudget, RateLimited
from ccm.ledger.store import ops
from ccm.ledger.store.base import Q
from ccm.ledger.times import DAY, HOUR, MINUTE, SECOND, period_end
from ccm.table import Policy
from ccm.usage import TokenUsage
from tests.ledger.conftest import FakeClock
from tests.ledger.helpers import CENT, SONNET, row, usd


async def counts(ledger: Ledger) -> dict[str, int]:
    def work() -> ops.Op[dict[str, int]]:
        out = {}
        for table in ("keys", "key_secrets", "credits", "holds", "usage", "rollup_daily", "prices"):
            rows = yield Q(f"SELECT COUNT(*) FROM {table}")
            out[table] = int(rows[0][0])
        rows = yield Q("SELECT COALESCE(SUM(balance), 0), COALESCE(SUM(held), 0) FROM keys")
        out["balance"], out["held"] = int(rows[0][0]), int(rows[0][1])
        return out

    result: dict[str, int] = await ledger.store.run(work(), write=False)
    return result


async def test_create_authenticate_and_account(ledger: Ledger) -> None:
    key, secret = await ledger.create_key(NewKey("alice", credits=usd("5")))
    assert secret.startswith("ccm-sk-") and len(secret) == 50
    found = await ledger.authenticate(secret)
    assert found is not None and found.name == "alice" and found.status(ledger.clock()) == "active"
    assert await ledger.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert await ledger.authenticate("sk-ant-not-ours") is None
    _, account = await ledger.key("alice")
    assert (account.balance, account.credited, account.held, account.settled) == (usd("5"), usd("5"), 0, 0)
    assert await ledger.audit(deep=True) == []


async def test_settle_debits_once_and_is_idempotent(ledger: Ledger) -> None:
    key, _ = await ledger.create_key(NewKey("alice", credits=usd("1")))
    hold = await ledger.admit(key, "req-1", 5 * CENT, tokens=1000)
    _, account = await ledger.key("alice")
    assert (account.balance, account.held) == (usd("0.95"), 5 * CENT)
    assert await ledger.settle(hold, row("req-1")) is True
    assert await ledger.settle(hold, row("req-1")) is False  # a retried settle charges nothing more
    _, account = await ledger.key("alice")
    assert (account.balance, account.held, account.settled) == (usd("0.99"), 0, CENT)
    assert (await counts(ledger))["usage"] == 1
    assert await ledger.audit(deep=True) == []


async def test_release_on_failure_writes_a_row_and_returns_the_hold(ledger: Ledger) -> None:
    key, _ = await ledger.create_key(NewKey("alice", credits=usd("1")))
    hold = await ledger.admit(key, "req-1", 5 * CENT, tokens=1000)
    failed = row("req-1", usage=TokenUsage(), status=502, error="api_error")
    assert await ledger.release(hold, failed)
    _, account = await ledger.key("alice")
    assert (account.balance, account.held, account.settled) == (usd("1"), 0, 0)
    # a failure after partial output is billed what the upstream billed
    hold = await ledger.admit(key, "req-2", 5 * CENT, tokens=1000)
    assert await ledger.release(hold, row("req-2", usage=TokenUsage(output=500), status=200, error="caller_cancelled",
                                          truncated=True))
    _, account = await ledger.key("alice")
    assert account.balance == usd("1") - CENT // 2
    assert await ledger.audit(deep=True) == []


async def test_out_of_credit_is_refused_and_writes_nothing(ledger: Ledger) -> None:
    key, _ = await ledger.create_key(NewKey("alice", credits=3 * CENT))
    await ledger.admit(key, "a", 2 * CENT, 10)
    before = await counts(ledger)
    with pytest.raises(OutOfCredit) as refused:
        await ledger.admit(key, "b", 2 * CENT, 10)
    assert refused.value.balance == CENT and refused.value.needed == 2 * CENT
    assert "$0.01" in refused.value.message and "ccm credits add alice" in (refused.value.hint or "")
    assert await counts(ledger) == before
    # with a minimum, what is left is held instead
    shrunk = await ledger.admit(key, "c", 2 * CENT, 10, minimum=CENT // 2)
    assert shrunk.amount == CENT
    assert await ledger.audit() == []


async def test_duplicate_request_id_is_refused_and_writes_nothing(ledger: Ledger) -> None:
    key, _ = await ledger.create_key(NewKey("alice", credits=usd("1")))
    await ledger.admit(key, "same", CENT, 10)
    before = await counts(ledger)
    with pytest.raises(DuplicateRequest):
        await ledger.admit(key, "same", CENT, 10)
    assert await counts(ledger) == before


async def test_budget_resets_each_period(ledger: Ledger, clock: FakeClock) -> None:
    key, _ = await ledger.create_key(NewKey("daily", budget=2 * CENT, period="day"))
    for i in range(2):
        hold = await ledger.admit(key, f"d{i}", CENT, 10)
        await ledger.settle(hold, row(f"d{i}", key_id=key.id))
    with pytest.raises(OverBudget) as refused:
        await ledger.admit(key, "d2", CENT, 10)
    assert refused.value.spent == 2 * CENT and refused.value.limit == 2 * CENT
    assert refused.value.resets_at == period_end("day", clock())
    clock.at = refused.value.resets_at  # midnight UTC
    hold = await ledger.admit(key, "d2", CENT, 10)
    await ledger.settle(hold, row("d2", key_id=key.id))
    _, account = await ledger.key("daily")
    assert account.period_spent == CENT and account.settled == 3 * CENT
    assert await ledger.audit(deep=True) == []


async def test_open_holds_count_against_the_budget(ledger: Ledger) -> None:
    key, _ = await ledger.create_key(NewKey("weekly", budget=3 * CENT, period="week"))
    await ledger.admit(key, "w0", 2 * CENT, 10)
    with pytest.raises(OverBudget):
        await ledger.admit(key, "w1", 2 * CENT, 10)


async def test_rpm_refusal_says_when_to_retry(ledger: Ledger, clock: FakeClock) -> None:
    key, _ = await ledger.create_key(NewKey("paced", rpm=2))
    first = await ledger.admit(key, "r0", 0, 10)
    assert [(s.kind, s.limit, s.remaining) for s in first.limits] == [("rpm", 2, 1)]
    await ledger.admit(key, "r1", 0, 10)
    with pytest.raises(RateLimited) as refused:
        await ledger.admit(key, "r2", 0, 10)
    assert refused.value.kind == "rpm" and refused.value.remaining == 0
    assert refused.value.retry_after == pytest.approx(30.0)  # one request's worth of a 2-per-minute bucket
    assert refused.value.reset_at == clock() + MINUTE
    clock.advance(30 * SECOND)
    await ledger.admit(key, "r2", 0, 10)


async def test_tpm_counts_estimates_then_actual_tokens(ledger: Ledger, clock: FakeClock) -> None:
    key, _ = await ledger.create_key(NewKey("tokens", tpm=1000))
    hold = await ledger.admit(key, "t0", 0, 600)
    with pytest.raises(RateLimited) as refused:
        await ledger.admit(key, "t1", 0, 600)
    assert refused.value.kind == "tpm" and refused.value.remaining == 400
    assert refused.value.retry_after == pytest.approx(12.0)  # 200 tokens at 1000/minute
    # the request really used 100 tokens: the bucket gets the difference back
    await ledger.settle(hold, row("t0", usage=TokenUsage(input=50, output=50), key_id=key.id, price=None))
    await ledger.admit(key, "t1", 0, 600)


def plan(name: str = "trial", kind: Literal["plan", "team"] = "plan", **limits: Any) -> Policy:
    """A route file's `plan NAME { … }` (or `team`), as the table holds it."""
    return Policy(kind=kind, name=name, **limits)


async def test_a_plans_budget_refuses_each_key_at_its_period_spend_until_the_period_resets(
    ledger: Ledger, clock: FakeClock
) -> None:
    """`plan trial { budget $0.02 per day }`: a key of the plan with no budget of its own gets the plan's, on its
    own (a second key of the plan spends nothing of the first's), and is served again the next day."""
    inherited = limits_of((plan(budget=Decimal("0.02"), period="day"),))
    keys = [(await ledger.create_key(NewKey(name, plan="trial")))[0] for name in ("first", "second")]
    assert not keys[0].checked and keys[0].under(inherited).checked  # nothing of its own, the plan's budget
    for i in range(2):
        hold = await ledger.admit(keys[0], f"d{i}", CENT, 10, inherited=inherited)
        assert hold.key.budget == 2 * CENT and hold.key.inherited.source("budget") == "plan trial"
        await ledger.settle(hold, row(f"d{i}", key_id=keys[0].id))
    with pytest.raises(OverBudget) as refused:
        await ledger.admit(keys[0], "d2", CENT, 10, inherited=inherited)
    assert (refused.value.spent, refused.value.limit) == (2 * CENT, 2 * CENT)
    assert refused.value.resets_at == period_end("day", clock())
    await ledger.admit(keys[1], "other", CENT, 10, inherited=inherited)  # per key, not a pool of the plan's
    clock.at = refused.value.resets_at  # midnight UTC
    hold = await ledger.admit(keys[0], "d2", CENT, 10, inherited=inherited)
    await ledger.settle(hold, row("d2", key_id=keys[0].id))
    _, account = await ledger.key("first")
    assert account.settled == 3 * CENT and account.period_spent == 0  # its own counter is for a budget of its own
    assert await ledger.audit(deep=True) == []


async def test_a_plan_budget_given_by_a_reload_counts_what_the_period_already_spent(ledger: Ledger) -> None:
    key, _ = await ledger.create_key(NewKey("early", plan="trial"))
    assert await ledger.record(row("before", key_id=key.id))  # a key with nothing to check, as before the reload
    inherited = limits_of((plan(budget=Decimal("0.015"), period="month"),))
    with pytest.raises(OverBudget) as refused:
        await ledger.admit(key, "after", CENT, 10, inherited=inherited)
    assert refused.value.spent == CENT
    hold = await ledger.admit(key, "after", CENT // 2, 10, inherited=inherited)
    assert hold.amount == CENT // 2


async def test_a_keys_own_budget_and_rpm_win_over_its_plans(ledger: Ledger) -> None:
    inherited = limits_of((plan(budget=Decimal("0.01"), period="day", rpm=1),))
    key, _ = await ledger.create_key(NewKey("own", budget=3 * CENT, period="week", rpm=5, plan="trial"))
    for i in range(3):
        hold = await ledger.admit(key, f"o{i}", CENT, 10, inherited=inherited)
        assert (hold.key.budget, hold.key.period, hold.key.rpm) == (3 * CENT, "week", 5)
        assert hold.key.inherited.from_ == ()
        await ledger.settle(hold, row(f"o{i}", key_id=key.id))
    with pytest.raises(OverBudget) as refused:
        await ledger.admit(key, "o3", CENT, 10, inherited=inherited)
    assert refused.value.limit == 3 * CENT and refused.value.period == "week"


async def test_a_plans_rpm_and_tpm_apply_to_its_keys(ledger: Ledger, clock: FakeClock) -> None:
    inherited = limits_of((plan(rpm=2), plan("web", "team", rpm=10, tpm=1000)))
    assert (inherited.rpm, inherited.tpm) == (2, 1000)  # the plan's first, then the team's
    assert inherited.from_ == (("rpm", "plan trial"), ("tpm", "team web"))
    key, _ = await ledger.create_key(NewKey("paced", plan="trial", team="web"))
    hold = await ledger.admit(key, "r0", 0, 600, inherited=inherited)
    assert [(s.kind, s.limit) for s in hold.limits] == [("rpm", 2), ("tpm", 1000)]
    with pytest.raises(RateLimited) as refused:
        await ledger.admit(key, "r1", 0, 600, inherited=inherited)
    assert refused.value.kind == "tpm" and refused.value.remaining == 400
    # the request used 100 tokens: settling gives the plan's bucket the difference back, as for a key's own
    await ledger.settle(hold, row("r0", usage=TokenUsage(input=50, output=50), key_id=key.id, price=None))
    await ledger.admit(key, "r1", 0, 600, inherited=inherited)
    with pytest.raises(RateLimited) as refused:
        await ledger.admit(key, "r2", 0, 10, inherited=inherited)
    assert refused.value.kind == "rpm" and refused.value.retry_after == pytest.approx(30.0)
    clock.advance(30 * SECOND)
    await ledger.admit(key, "r2", 0, 10, inherited=inherited)


async def test_extend_stops_at_a_plans_budget(ledger: Ledger) -> None:
    inherited = limits_of((plan("web", "team", budget=Decimal("0.05"), period="month"),))
    key, _ = await ledger.create_key(NewKey("long", team="web"))
    hold = await ledger.admit(key, "l", 2 * CENT, 10, inherited=inherited)
    hold = await ledger.extend(hold, 2 * CENT)
    assert hold.amount == 4 * CENT and hold.key.inherited.source("budget") == "team web"
    with pytest.raises(OverBudget):
        await ledger.extend(hold, 2 * CENT)
    await ledger.settle(hold, row("l", usage=TokenUsage(output=4000), key_id=key.id))
    assert await ledger.audit(deep=True) == []


async def test_revoked_and_expired_keys_are_refused(ledger: Ledger, clock: FakeClock) -> None:
    key, secret = await ledger.create_key(NewKey("gone", credits=usd("1")))
    await ledger.revoke("gone")
    found = await ledger.authenticate(secret)
    assert found is not None and found.status(clock()) == "revoked"
    with pytest.raises(KeyRefused):
        await ledger.admit(key, "x", CENT, 10)  # even with a KeyInfo read before the revocation
    soon, secret2 = await ledger.create_key(NewKey("soon", credits=usd("1"), expires_at=clock() + HOUR))
    await ledger.admit(soon, "y", CENT, 10)
    clock.advance(HOUR)
    found = await ledger.authenticate(secret2)
    assert found is not None and found.status(clock()) == "expired"
    with pytest.raises(KeyRefused):
        await ledger.admit(soon, "z", CENT, 10)


async def test_rotation_keeps_the_old_secret_for_the_grace_period(ledger: Ledger, clock: FakeClock) -> None:
    await ledger.create_key(NewKey("rot"))
    key, old = await ledger.create_key(NewKey("rot2"))
    _, new = await ledger.rotate("rot2", HOUR)
    for secret in (old, new):
        found = await ledger.authenticate(secret)
        assert found is not None and found.status(clock()) == "active"
    clock.advance(HOUR)
    old_key, new_key = await ledger.authenticate(old), await ledger.authenticate(new)
    assert old_key is not None and old_key.status(clock()) == "expired"
    assert new_key is not None and new_key.status(clock()) == "active"
    _, newer = await ledger.rotate("rot2", 0)  # no grace: the previous secret stops at once
    again = await ledger.authenticate(new)
    assert again is not None and again.status(clock()) == "expired"
    newest = await ledger.authenticate(newer)
    assert newest is not None and newest.status(clock()) == "active"


async def test_credits_are_entries(ledger: Ledger) -> None:
    await ledger.create_key(NewKey("paid", credits=usd("1")))
    await ledger.add_credits("paid", usd("2.5"), "invoice 7")
    await ledger.add_credits("paid", usd("0.000000001"))
    _, account = await ledger.key("paid")
    assert account.credited == usd("3.5") + 1 == account.balance
    assert (await counts(ledger))["credits"] == 3
    assert await ledger.audit(deep=True) == []


async def test_bad_admin_input_writes_nothing(ledger: Ledger) -> None:
    await ledger.create_key(NewKey("paid", credits=usd("1")))
    await ledger.create_key(NewKey("free"))
    await ledger.revoke("free")
    before = await counts(ledger)
    attempts = [
        ledger.create_key(NewKey("paid")),  # exists
        ledger.add_credits("free", usd("1")),  # no balance to add to
        ledger.add_credits("nobody", usd("1")),
        ledger.add_credits("paid", 0),
        ledger.add_credits("paid", -5),
        ledger.revoke("free"),  # already revoked
        ledger.revoke("nobody"),
        ledger.rotate("free", 0),  # revoked: nothing to rotate
        ledger.rotate("paid", -1),
    ]
    for attempt in attempts:
        with pytest.raises((BadInput, UnknownKey)):
            await attempt
    assert await counts(ledger) == before


async def test_local_caller_is_metered_without_a_key(ledger: Ledger) -> None:
    assert await ledger.record(row("local-1", usage=TokenUsage(input=1000, output=1000), price=SONNET))
    assert not await ledger.record(row("local-1", usage=TokenUsage(input=1000, output=1000), price=SONNET))
    from ccm.ledger.reports import usage

    lines = await usage(ledger.store, since=0, until=ledger.clock() + 1, by="key")
    assert [(line.group, line.requests, line.upstream) for line in lines] == [("(local)", 1, usd("0.018"))]
    assert await ledger.audit(deep=True) == []


async def test_a_price_change_does_not_change_stored_costs(ledger: Ledger) -> None:
    await ledger.record(row("before", usage=TokenUsage(input=1_000_000), price=SONNET))
    dearer = SONNET.model_copy(update={"input": Decimal(6)})
    await ledger.record(row("after", usage=TokenUsage(input=1_000_000), price=dearer))

    def work() -> ops.Op[list[tuple[object, ...]]]:
        rows = yield Q("SELECT u.request_id, u.upstream, p.body FROM usage u JOIN prices p ON p.id = u.price_id "
                       "ORDER BY u.request_id")
        return rows

    stored = await ledger.store.run(work(), write=False)
    assert [(r[0], r[1]) for r in stored] == [("after", usd("6")), ("before", usd("3"))]
    assert '"input":"3"' in str(stored[1][2]) and '"input":"6"' in str(stored[0][2])


async def test_extend_grows_a_hold_until_the_credit_is_gone(ledger: Ledger) -> None:
    key, _ = await ledger.create_key(NewKey("long", credits=5 * CENT))
    hold = await ledger.admit(key, "l", 2 * CENT, 10)
    hold = await ledger.extend(hold, 2 * CENT)
    assert hold.amount == 4 * CENT
    with pytest.raises(OutOfCredit):
        await ledger.extend(hold, 2 * CENT)
    await ledger.settle(hold, row("l", usage=TokenUsage(output=4500), key_id=key.id))
    _, account = await ledger.key("long")
    assert (account.balance, account.held) == (5 * CENT - 4 * CENT - CENT // 2, 0)
    with pytest.raises(LedgerError):
        await ledger.extend(hold, CENT)  # settled: no longer open
    assert await ledger.audit(deep=True) == []


async def test_holds_of_a_dead_process_are_released(ledger: Ledger) -> None:
    key, _ = await ledger.create_key(NewKey("k", credits=usd("1")))
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(child.stdout)
    ghost = Ledger(ledger.store, clock=ledger.clock, instance="ghost-instance")
    await ledger.store.run(ops.register(ops.InstanceRow("ghost-instance", ledger.host, dead_pid, "x:1", 0, None),
                                        ledger.clock()))
    await ghost.admit(key, "orphan", 30 * CENT, 10)
    mine = await ledger.admit(key, "mine", 10 * CENT, 10)
    swept = await ledger.sweep()
    assert (swept.holds, swept.amount, swept.instances) == (1, 30 * CENT, 1)
    _, account = await ledger.key("k")
    assert (account.balance, account.held) == (usd("0.9"), mine.amount)
    assert await ledger.audit() == []


async def test_a_live_process_on_this_host_keeps_its_holds(ledger: Ledger) -> None:
    key, _ = await ledger.create_key(NewKey("k", credits=usd("1")))
    from ccm.processes import process_marker

    other = Ledger(ledger.store, clock=ledger.clock, instance="alive")
    await ledger.store.run(ops.register(ops.InstanceRow("alive", ledger.host, os.getpid(),
                                                        process_marker(os.getpid()), 0, None), ledger.clock()))
    await other.admit(key, "kept", 30 * CENT, 10)
    assert (await ledger.sweep()).holds == 0


async def test_a_hold_past_its_ttl_is_released_and_a_late_settle_still_charges(ledger: Ledger,
                                                                              clock: FakeClock) -> None:
    key, _ = await ledger.create_key(NewKey("k", credits=usd("1")))
    hold = await ledger.admit(key, "slow", 10 * CENT, 10)
    clock.advance(ledger.hold_ttl)
    assert (await ledger.sweep()).holds == 1
    _, account = await ledger.key("k")
    assert (account.balance, account.held) == (usd("1"), 0)
    assert await ledger.settle(hold, row("slow", key_id=key.id))
    _, account = await ledger.key("k")
    assert (account.balance, account.held, account.settled) == (usd("1") - CENT, 0, CENT)
    assert await ledger.audit(deep=True) == []


async def test_stop_releases_this_instances_holds(database_url: str, clock: FakeClock) -> None:
    first = await Ledger.open(database_url, clock=clock)
    await first.start(background=False)
    key, _ = await first.create_key(NewKey("k", credits=usd("1")))
    await first.admit(key, "left-open", 10 * CENT, 10)
    await first.stop()
    second = await Ledger.open(database_url, clock=clock)
    await second.start(background=False)
    try:
        _, account = await second.key("k")
        assert (account.balance, account.held) == (usd("1"), 0)
        assert await second.audit(deep=True) == []
    finally:
        await second.stop()


async def test_reports_group_and_sum(ledger: Ledger, clock: FakeClock) -> None:
    from ccm.ledger.reports import billing, usage

    key, _ = await ledger.create_key(NewKey("alice", markup=Decimal(20)))
    start = clock()
    for i in range(3):
        await ledger.record(row(f"a{i}", usage=TokenUsage(input=1000, output=100), price=SONNET, markup=Decimal(20),
                                key_id=key.id, model="sonnet", provider="anthropic", rule="default",
                                session="s1"))
        clock.advance(DAY)
    await ledger.record(row("l0", usage=TokenUsage(input=1000), price=SONNET, model="coder", provider="ds"))
    end = clock() + 1
    by_day = await usage(ledger.store, since=start - HOUR, until=end, by="day")
    assert [line.requests for line in by_day] == [1, 1, 1, 1]
    by_model = await usage(ledger.store, since=start, until=end, by="model")
    assert [(line.group, line.requests) for line in by_model] == [("coder", 1), ("sonnet", 3)]
    total = (await usage(ledger.store, since=0, until=end))[0]
    assert total.upstream == 3 * usd("0.0045") + usd("0.003")
    assert total.charged == 3 * usd("0.0054") + usd("0.003")
    sessions = await usage(ledger.store, since=start, until=end, by="session", key="alice")
    assert [(line.group, line.requests) for line in sessions] == [("s1", 3)]
    bills = await billing(ledger.store, since=0, until=end)
    assert sum(b.markup for b in bills if b.key == "alice") == 3 * usd("0.0009")
    with pytest.raises(UnknownKey):
        await usage(ledger.store, since=0, until=end, key="nobody")


async def test_a_batch_records_each_request_once_whatever_it_repeats(ledger: Ledger) -> None:
    # a journal replayed after a crash between commit and removal repeats rows; a batch mixes local and keyed rows
    from ccm.ledger.reports import usage

    key, _ = await ledger.create_key(NewKey("batch"))
    first = [row("once-a"), row("once-b", key_id=key.id)]
    assert await ledger.record_many(first) == 2
    again = [row("once-a"), row("once-c"), row("once-c"), row("once-b", key_id=key.id), row("once-d", key_id=key.id)]
    assert await ledger.record_many(again) == 2  # once-c (given twice) and once-d
    assert await ledger.audit(deep=True) == []  # the rollups count each row once
    lines = await usage(ledger.store, since=0, until=2**62, by="key")
    assert sorted((line.group, line.requests) for line in lines) == [("(local)", 2), ("batch", 2)]


async def test_a_batch_larger_than_one_insert_is_written_whole(ledger: Ledger) -> None:
    # a journal file replayed after a long outage holds thousands of rows: they go in several multi-row INSERTs, each
    # within the databases' limits on a statement's parameters
    from ccm.ledger.store.ops import ROWS_PER_INSERT

    count = 2 * ROWS_PER_INSERT + 1
    assert await ledger.record_many([row(f"many-{i}") for i in range(0, count, 2)]) == ROWS_PER_INSERT + 1
    assert await ledger.record_many([row(f"many-{i}") for i in range(count)]) == ROWS_PER_INSERT  # the odd ones
    assert await ledger.audit(deep=True) == []


async def test_a_csv_export_is_the_same_in_blocks_of_any_size(ledger: Ledger, clock: FakeClock) -> None:
    # SQLite cuts the export into time windows of about `chunk` rows: none may lose, repeat or reorder a row, also
    # where many rows share one timestamp or a key's rows are sparse
    from ccm.ledger.reports import export_csv

    key, _ = await ledger.create_key(NewKey('say "hi", bob'))
    start = clock()
    rows = []
    for i in range(40):
        at = start + (i // 8) * SECOND + (i % 3)  # 8 rows a second, several on one microsecond
        rows.append(row(f'r"{i}', key_id=key.id if i % 5 == 0 else None, model="m,1", session=None,
                        error="a\nb" if i % 7 == 0 else None, time=at))
    assert await ledger.record_many(rows) == 40

    async def export(chunk: int, key: str | None = None) -> str:
        return "".join([text async for text in export_csv(ledger.store, since=start, until=clock() + DAY,
                                                          key=key, chunk=chunk)])

    whole = await export(1000)
    assert whole.count('"r""') == 40 and whole.index('"r""0"') < whole.index('"r""39"')
    for chunk in (1, 2, 7):
        assert await export(chunk) == whole
    for name in ('say "hi", bob', "(local)"):
        assert await export(3, key=name) == await export(1000, key=name)
    assert (await export(1, key='say "hi", bob')).count('"r""') == 8


async def test_the_optional_key_cache_never_lets_a_revoked_key_spend(database_url: str, clock: FakeClock) -> None:
    cached = await Ledger.open(database_url, clock=clock, auth_cache=60.0)
    await cached.start(background=False)
    try:
        key, secret = await cached.create_key(NewKey("c", credits=usd("1")))
        assert (await cached.authenticate(secret)) is not None
        await cached.revoke("c")
        stale = await cached.authenticate(secret)  # remembered: still shows active for up to 60 s
        assert stale is not None and stale.status(clock()) == "active"
        with pytest.raises(KeyRefused):
            await cached.admit(stale, "r", CENT, 10)  # admission reads the row under its lock
    finally:
        await cached.stop()
