"""The ledger's arithmetic, pure: what admitting, extending, settling and releasing do to a key's `Account`.

Both stores run these functions between reading a key's row under its lock (PostgreSQL `SELECT … FOR UPDATE`;
SQLite inside the one writer's `BEGIN IMMEDIATE`) and writing the result back, in the same transaction: nothing is
ever checked in one transaction and written in another. A function that refuses raises before anything is written.

Every function keeps `balance = credited - settled - held` (hold: balance down, held up; settle: held down by the
hold, balance up by the hold and down by the cost, settled up by the cost).

Rate limits are token buckets, as Anthropic's are: `rpm` requests (or `tpm` tokens) of capacity, refilled
continuously at the limit per minute. A request takes one request and its estimated tokens; settling corrects the
tokens to the actual count (the bucket may go below zero: later requests then wait). A request bigger than the whole
`tpm` bucket is admitted only when the bucket is full, so it can never be refused forever.
"""

from __future__ import annotations

from dataclasses import replace

from ccm.ledger.money import Money
from ccm.ledger.records import Account, KeyInfo, RateState
from ccm.ledger.refusals import KeyRefused, OutOfCredit, OverBudget, RateLimited
from ccm.ledger.times import MINUTE, SECOND, Micros, period_end, period_start

UNIT = 1000  # bucket levels are kept in thousandths


def check_status(key: KeyInfo, at: Micros) -> None:
    status = key.status(at)
    if status != "active":
        raise KeyRefused(key.name, status)


def _refill(level: int, level_at: Micros, limit: int, at: Micros) -> int:
    capacity = limit * UNIT
    if level_at == 0:  # never used: full
        return capacity
    elapsed = max(at - level_at, 0)
    return min(capacity, level + elapsed * capacity // MINUTE)


def _wait(level: int, need: int, limit: int) -> Micros:
    """Microseconds until a bucket at `level` holds `need` (thousandths)."""
    missing = need - level
    return 0 if missing <= 0 else -(-missing * MINUTE // (limit * UNIT))


def _state(kind: str, level: int, limit: int, at: Micros) -> RateState:
    return RateState(kind, limit, max(level // UNIT, 0), at + _wait(level, limit * UNIT, limit))  # type: ignore[arg-type]


def period_spent(key: KeyInfo, account: Account, at: Micros, spent_inherited: Money | None) -> Money:
    """What the key spent in its budget's current period: its own counter for a budget of its own, `spent_inherited`
    (from the rollups: `ops.spent_inherited`) for one it takes from its plan or team."""
    assert key.period is not None
    if key.budget_inherited:
        assert spent_inherited is not None, "a plan's or team's budget needs what the key spent in its period"
        return spent_inherited
    return account.period_spent if account.period_start == period_start(key.period, at) else 0


def _budget_room(key: KeyInfo, account: Account, at: Micros, spent_inherited: Money | None) -> Money:
    """What the budget still allows (after open holds)."""
    assert key.budget is not None
    return key.budget - period_spent(key, account, at, spent_inherited) - account.held


def _grant(key: KeyInfo, account: Account, amount: Money, minimum: Money | None, at: Micros,
           spent_inherited: Money | None) -> Money:
    """How much of `amount` may be held: all of it, or, when `minimum` is given, whatever is left if at least that;
    else the refusal."""
    granted = amount
    if key.credits and account.balance < granted:
        if minimum is None or account.balance < minimum:
            raise OutOfCredit(key.name, account.balance, amount)
        granted = account.balance
    if key.budget is not None and key.period is not None:
        room = _budget_room(key, account, at, spent_inherited)
        if room < granted:
            if minimum is None or room < minimum:
                spent = key.budget - room
                raise OverBudget(key.name, key.period, spent, key.budget, period_end(key.period, at), amount,
                                 key.inherited.source("budget"))
            granted = room
    return max(granted, 0)


def _hold(key: KeyInfo, account: Account, granted: Money, at: Micros) -> Account:
    changed = replace(account, balance=account.balance - granted, held=account.held + granted)
    if key.own_budget:
        assert key.period is not None
        start = period_start(key.period, at)
        if account.period_start != start:
            changed = replace(changed, period_start=start, period_spent=0)
    return changed


def admit(key: KeyInfo, account: Account, amount: Money, tokens: int, at: Micros,
          minimum: Money | None = None, spent_inherited: Money | None = None
          ) -> tuple[Account, Money, tuple[RateState, ...]]:
    """Admit a request that may cost up to `amount` and is estimated at `tokens`: the new account, the amount held
    (less than `amount` only with `minimum`), and the rate limits after it. `key` carries its plan's or team's
    limits (`KeyInfo.under`); for a budget it inherits, `spent_inherited` is what it was charged in the budget's
    current period (the store sums its rollups: the account's period counter counts only a budget of its own)."""
    check_status(key, at)
    limits: list[RateState] = []
    changed = account
    if key.rpm is not None:
        level = _refill(account.rpm_level, account.rpm_at, key.rpm, at)
        if level < UNIT:
            wait = _wait(level, UNIT, key.rpm)
            raise RateLimited(key.name, "rpm", key.rpm, 0, wait / SECOND, at + _wait(level, key.rpm * UNIT, key.rpm))
        changed = replace(changed, rpm_level=level - UNIT, rpm_at=at)
        limits.append(_state("rpm", level - UNIT, key.rpm, at))
    if key.tpm is not None:
        level = _refill(account.tpm_level, account.tpm_at, key.tpm, at)
        need = min(tokens, key.tpm) * UNIT
        if level < need:
            wait = _wait(level, need, key.tpm)
            raise RateLimited(key.name, "tpm", key.tpm, max(level // UNIT, 0), wait / SECOND,
                              at + _wait(level, key.tpm * UNIT, key.tpm))
        changed = replace(changed, tpm_level=level - tokens * UNIT, tpm_at=at)
        limits.append(_state("tpm", level - tokens * UNIT, key.tpm, at))
    granted = _grant(key, account, amount, minimum, at, spent_inherited)
    return _hold(key, changed, granted, at), granted, tuple(limits)


def extend(key: KeyInfo, account: Account, amount: Money, at: Micros,
           spent_inherited: Money | None = None) -> Account:
    """Hold `amount` more for a request already admitted (a long answer): all of it or a refusal. A revoked key's
    requests in flight may finish what they hold, but get no more. `spent_inherited` as for `admit`."""
    check_status(key, at)
    granted = _grant(key, account, amount, None, at, spent_inherited)
    return _hold(key, account, granted, at)


def settle(key: KeyInfo | None, account: Account, held: Money | None, charged: Money, tokens_actual: int,
           tokens_estimate: int, at: Micros) -> Account:
    """Close a request: its hold (`held`; None when there was none, or a sweep already released it) goes, its cost
    is settled. A key's tpm bucket is corrected by the difference between the actual and the estimated tokens."""
    back = held or 0
    changed = replace(account, balance=account.balance + back - charged, held=account.held - back,
                      settled=account.settled + charged)
    if key is not None and key.own_budget:
        assert key.period is not None
        spent = period_spent(key, account, at, None)
        changed = replace(changed, period_start=period_start(key.period, at), period_spent=spent + charged)
    if key is not None and key.tpm is not None and held is not None and account.tpm_at:
        level = _refill(account.tpm_level, account.tpm_at, key.tpm, at) - (tokens_actual - tokens_estimate) * UNIT
        changed = replace(changed, tpm_level=min(level, key.tpm * UNIT), tpm_at=at)
    return changed


def release(account: Account, held: Money) -> Account:
    """Give back a hold with nothing settled (a sweep of a dead process's holds)."""
    return replace(account, balance=account.balance + held, held=account.held - held)


def credit(account: Account, amount: Money) -> Account:
    return replace(account, balance=account.balance + amount, credited=account.credited + amount)
