"""Every ledger operation, written once as a generator of SQL (see `ccm.ledger.store.base`), run in one transaction.

The money arithmetic is `ccm.ledger.admission`'s; these functions read the rows it needs under their lock, call it,
and write back what it returns. Locks are always taken in the same order — a key's row first, then its holds, usage
and rollups — so two transactions never wait on each other in a circle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from operator import attrgetter
from typing import Any

from ccm.frozen import frozen
from ccm.ledger import admission
from ccm.ledger.errors import BadInput, DuplicateRequest, LedgerError, UnknownKey
from ccm.ledger.money import Money
from ccm.ledger.records import NO_LIMITS, Account, Hold, KeyInfo, Limits, NewKey, UsageRow
from ccm.ledger.store.base import Op, Q, Row
from ccm.ledger.times import DAY, Micros, period_start

KEY_COLUMNS = (
    "id, name, prefix, created_at, expires_at, revoked_at, credits, budget, period, models, rpm, tpm, markup, plan, "
    "team, balance, held, credited, settled, period_start, period_spent, rpm_level, rpm_at, tpm_level, tpm_at"
)
_SELECT_KEY = f"SELECT {KEY_COLUMNS} FROM keys"

USAGE_COLUMNS = (
    "request_id", "ts", "key_id", "session", "rule", "model", "provider", "upstream_model", "attempts", "stream",
    "status", "error", "input", "output", "cache_write_5m", "cache_write_1h", "cache_read", "web_search",
    "latency_ms", "ttft_ms", "upstream", "charged", "held", "price_id", "estimated", "truncated",
)
_USAGE_VALUES = f"({', '.join('?' * len(USAGE_COLUMNS))})"
_INSERT_USAGE_INTO = f"INSERT INTO usage ({', '.join(USAGE_COLUMNS)}) VALUES "
_INSERT_USAGE = f"{_INSERT_USAGE_INTO}{_USAGE_VALUES} ON CONFLICT (request_id) DO NOTHING RETURNING id"
# Rows a multi-row INSERT carries: 26 values each stays under SQLite's 32,766 variables and PostgreSQL's 65,535.
ROWS_PER_INSERT = 500
_COUNTS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read", "web_search")
_ROLLUP_SUMS = ("requests", "errors", *_COUNTS, "upstream", "charged", *(f"c_{c}" for c in _COUNTS))
_UPSERT_ROLLUP_INTO = f"INSERT INTO rollup_daily (day, key_id, model, provider, {', '.join(_ROLLUP_SUMS)}) VALUES "
_ROLLUP_VALUES = f"(?, ?, ?, ?, {', '.join('?' * len(_ROLLUP_SUMS))})"
_ON_ROLLUP = " ON CONFLICT (day, key_id, model, provider) DO UPDATE SET " + ", ".join(
    f"{c} = rollup_daily.{c} + excluded.{c}" for c in _ROLLUP_SUMS)
_WRITE_ACCOUNT = (
    "UPDATE keys SET balance = ?, held = ?, credited = ?, settled = ?, period_start = ?, period_spent = ?, "
    "rpm_level = ?, rpm_at = ?, tpm_level = ?, tpm_at = ? WHERE id = ?"
)


def parse_key(row: Row, secret_expires_at: Micros | None = None) -> tuple[KeyInfo, Account]:
    (id_, name, prefix, created_at, expires_at, revoked_at, credits, budget, period, models, rpm, tpm, markup, plan,
     team, balance, held, credited, settled, period_start, period_spent, rpm_level, rpm_at, tpm_level, tpm_at) = row
    key = KeyInfo(
        id=id_, name=name, prefix=prefix, created_at=created_at, credits=bool(credits), budget=budget, period=period,
        models=tuple(models.split(",")) if models else (), rpm=rpm, tpm=tpm,
        markup=Decimal(markup) if markup is not None else None, plan=plan, team=team, expires_at=expires_at,
        revoked_at=revoked_at, secret_expires_at=secret_expires_at,
    )
    account = Account(balance, held, credited, settled, period_start, period_spent, rpm_level, rpm_at, tpm_level,
                      tpm_at)
    return key, account


def _write(key_id: int, a: Account) -> Q:
    return Q(_WRITE_ACCOUNT, (a.balance, a.held, a.credited, a.settled, a.period_start, a.period_spent, a.rpm_level,
                              a.rpm_at, a.tpm_level, a.tpm_at, key_id))


def _locked(key_id: int) -> Op[tuple[KeyInfo, Account]]:
    rows = yield Q(f"{_SELECT_KEY} WHERE id = ?", (key_id,), lock=True)
    if not rows:
        raise LedgerError(f"no key with id {key_id}")
    return parse_key(rows[0])


def _locked_under(key_id: int, limits: Limits) -> Op[tuple[KeyInfo, Account]]:
    """The key's row under its lock, with its plan's or team's `limits` where it sets none itself."""
    key, account = yield from _locked(key_id)
    return key.under(limits), account


def spent_inherited(key: KeyInfo, at: Micros) -> Op[Money | None]:
    """What the key was charged in the current period of a budget it inherits, from its rollups (None: no such
    budget). Read under the key's lock, so every settle that closed one of its holds is counted, and exact whatever
    the budget was when the spend happened: a reload that gives a plan a budget counts the period's spend so far."""
    if not key.budget_inherited or key.period is None:
        return None
    rows = yield Q("SELECT COALESCE(SUM(charged), 0) FROM rollup_daily WHERE key_id = ? AND day >= ?",
                   (key.id, period_start(key.period, at) // DAY))
    return int(rows[0][0])


def _by_name(name: str, lock: bool = False) -> Op[tuple[KeyInfo, Account]]:
    rows = yield Q(f"{_SELECT_KEY} WHERE name = ?", (name,), lock=lock)
    if not rows:
        raise UnknownKey(name)
    return parse_key(rows[0])


def _in(values: Sequence[Any]) -> str:
    return "(" + ", ".join("?" * len(values)) + ")"


# --- keys ------------------------------------------------------------------------------------------------------------


def create_key(new: NewKey, hash_: str, prefix: str, at: Micros) -> Op[KeyInfo]:
    credits = new.credits or 0
    rows = yield Q(
        "INSERT INTO keys (name, prefix, created_at, expires_at, credits, budget, period, models, rpm, tpm, markup, "
        "plan, team, balance, credited) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (name) DO NOTHING RETURNING id",
        (new.name, prefix, at, new.expires_at, int(new.credits is not None), new.budget, new.period,
         ",".join(new.models), new.rpm, new.tpm, None if new.markup is None else str(new.markup), new.plan, new.team,
         credits, credits),
    )
    if not rows:
        raise BadInput(f"a key named `{new.name}` already exists", f"pick another name, or `ccm keys show {new.name}`")
    key_id = rows[0][0]
    yield Q("INSERT INTO key_secrets (hash, key_id, prefix, created_at) VALUES (?, ?, ?, ?)",
            (hash_, key_id, prefix, at))
    if credits:
        yield Q("INSERT INTO credits (key_id, amount, note, created_at) VALUES (?, ?, ?, ?)",
                (key_id, credits, new.note or "initial credits", at))
    key, _ = yield from _locked(key_id)
    return key


def find_secret(hash_: str) -> Op[KeyInfo | None]:
    rows = yield Q(
        f"SELECT s.expires_at, {', '.join('k.' + c.strip() for c in KEY_COLUMNS.split(','))} "
        "FROM key_secrets s JOIN keys k ON k.id = s.key_id WHERE s.hash = ?",
        (hash_,),
    )
    if not rows:
        return None
    return parse_key(rows[0][1:], rows[0][0])[0]


def ping() -> Op[None]:
    yield Q("SELECT 1")


def get_key(name: str) -> Op[tuple[KeyInfo, Account]]:
    return (yield from _by_name(name))


def get_key_by_id(key_id: int) -> Op[tuple[KeyInfo, Account] | None]:
    rows = yield Q(f"{_SELECT_KEY} WHERE id = ?", (key_id,))
    return parse_key(rows[0]) if rows else None


def find_key(name: str) -> Op[tuple[KeyInfo, Account] | None]:
    rows = yield Q(f"{_SELECT_KEY} WHERE name = ?", (name,))
    return parse_key(rows[0]) if rows else None


def list_keys() -> Op[list[tuple[KeyInfo, Account]]]:
    rows = yield Q(f"{_SELECT_KEY} ORDER BY name")
    return [parse_key(row) for row in rows]


def page_keys(after: str | None, limit: int, contains: str | None) -> Op[list[tuple[KeyInfo, Account]]]:
    """Up to `limit` keys in name order after the name `after`, whose name contains `contains` (any case)."""
    where, params = ["1 = 1"], list[Any]()
    if after is not None:
        where.append("name > ?")
        params.append(after)
    if contains:
        escaped = contains.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append("lower(name) LIKE ? ESCAPE '\\'")
        params.append(f"%{escaped}%")
    rows = yield Q(f"{_SELECT_KEY} WHERE {' AND '.join(where)} ORDER BY name LIMIT ?", (*params, limit))
    return [parse_key(row) for row in rows]


def revoke(name: str, at: Micros) -> Op[KeyInfo]:
    key, _ = yield from _by_name(name, lock=True)
    if key.revoked_at is not None:
        raise BadInput(f"key `{name}` is already revoked")
    yield Q("UPDATE keys SET revoked_at = ? WHERE id = ?", (at, key.id))
    revoked, _ = yield from _locked(key.id)
    return revoked


def rotate(name: str, hash_: str, prefix: str, grace_until: Micros, at: Micros) -> Op[KeyInfo]:
    """A new secret; the key's other secrets stop working at `grace_until` (now, with no grace)."""
    key, _ = yield from _by_name(name, lock=True)
    if key.status(at) != "active":
        raise BadInput(f"key `{name}` is {key.status(at)}: there is nothing to rotate", "create a new key")
    yield Q("UPDATE key_secrets SET expires_at = ? WHERE key_id = ? AND (expires_at IS NULL OR expires_at > ?)",
            (grace_until, key.id, grace_until))
    yield Q("INSERT INTO key_secrets (hash, key_id, prefix, created_at) VALUES (?, ?, ?, ?)",
            (hash_, key.id, prefix, at))
    yield Q("UPDATE keys SET prefix = ? WHERE id = ?", (prefix, key.id))
    rotated, _ = yield from _locked(key.id)
    return rotated


def set_limits(name: str, budget: Money | None, period: str | None, rpm: int | None, tpm: int | None,
               at: Micros) -> Op[KeyInfo]:
    """A key's budget (per period) and rate limits, replaced; what was spent in the period so far still counts."""
    key, _ = yield from _by_name(name, lock=True)
    if key.revoked_at is not None:
        raise BadInput(f"key `{name}` is revoked: its limits no longer matter", "create a new key")
    yield Q("UPDATE keys SET budget = ?, period = ?, rpm = ?, tpm = ? WHERE id = ?",
            (budget, period, rpm, tpm, key.id))
    changed, _ = yield from _locked(key.id)
    return changed


def add_credits(name: str, amount: Money, note: str | None, at: Micros) -> Op[Account]:
    key, account = yield from _by_name(name, lock=True)
    if not key.credits:
        raise BadInput(f"key `{name}` has no credit balance: it was created without --credits, so its spend is "
                       "not checked against one", "to cap its spend, give it a budget; or create a prepaid key with "
                                                  "--credits")
    yield Q("INSERT INTO credits (key_id, amount, note, created_at) VALUES (?, ?, ?, ?)", (key.id, amount, note, at))
    changed = admission.credit(account, amount)
    yield _write(key.id, changed)
    return changed


# --- holds -----------------------------------------------------------------------------------------------------------


def admit(key_id: int, request_id: str, amount: Money, tokens: int, minimum: Money | None, instance: str,
          at: Micros, expires_at: Micros, inherited: Limits = NO_LIMITS) -> Op[Hold]:
    """Hold for a request on `key_id`, under its own limits and, where it sets none, `inherited` (its plan's or
    team's, from the table serving the request)."""
    key, account = yield from _locked_under(key_id, inherited)
    spent = yield from spent_inherited(key, at)
    changed, granted, limits = admission.admit(key, account, amount, tokens, at, minimum, spent)
    rows = yield Q(
        "INSERT INTO holds (request_id, key_id, amount, tokens, instance, created_at, expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (request_id) DO NOTHING RETURNING id",
        (request_id, key_id, granted, tokens, instance, at, expires_at),
    )
    if not rows:
        raise DuplicateRequest(f"request `{request_id}` already holds credit", "every request needs its own id")
    yield _write(key_id, changed)
    return Hold(rows[0][0], request_id, key, granted, tokens, at, expires_at, limits)


def extend(hold: Hold, amount: Money, at: Micros) -> Op[Hold]:
    key, account = yield from _locked_under(hold.key.id, hold.key.inherited)  # the limits it was admitted under
    spent = yield from spent_inherited(key, at)
    changed = admission.extend(key, account, amount, at, spent)
    rows = yield Q("UPDATE holds SET amount = amount + ? WHERE id = ? RETURNING amount", (amount, hold.id))
    if not rows:
        raise LedgerError(f"the hold of request `{hold.request_id}` is no longer open",
                          "it was settled, or released by a sweep after its lease or its process ended")
    yield _write(key.id, changed)
    return Hold(hold.id, hold.request_id, key, rows[0][0], hold.tokens, hold.created_at, hold.expires_at,
                hold.limits)


@frozen
class Finished:
    recorded: bool  # False: a row for this request id existed already (a retried settle): nothing was charged
    held: Money | None  # what was held for it (None: nothing, or a sweep had released it)


def finish(row: UsageRow, price_id: int | None, at: Micros, inherited: Limits = NO_LIMITS) -> Op[Finished]:
    """Settle (or release) a request: its row, its hold closed, its cost debited, its rollup; in one transaction.
    `inherited`: the plan's or team's limits its hold was admitted under (its tpm bucket is corrected by them)."""
    finished = yield from _finish_row(row, price_id, at, inherited=inherited)
    if finished.recorded:
        yield from _add_to_rollups([row], at)
    return finished


def finish_all(rows: Sequence[tuple[UsageRow, int | None]], at: Micros) -> Op[int]:
    """`finish` for each (row, price id), in one transaction: how many rows were new. The local caller's rows (no
    key: nothing to hold or debit, the journal's usual batch) are written `ROWS_PER_INSERT` at a time
    (`_record_local`); the keyed ones each as `finish` writes it. The new rows' rollups are summed first and written
    once per (day, key, model, provider): a batch of a hundred rows shares a handful."""
    local = list({row.request_id: (row, price_id) for row, price_id in rows if row.key_id is None}.values())
    new: list[UsageRow] = []
    for start in range(0, len(local), ROWS_PER_INSERT):
        new += yield from _record_local(local[start:start + ROWS_PER_INSERT], at)
    for row, price_id in rows:
        if row.key_id is not None:
            finished = yield from _finish_row(row, price_id, at)
            if finished.recorded:
                new.append(row)
    yield from _add_to_rollups(new, at)
    return len(new)


def _record_local(rows: Sequence[tuple[UsageRow, int | None]], at: Micros) -> Op[list[UsageRow]]:
    """Local rows (distinct request ids) in three statements, none returning a row a request (SQLite's driver takes
    the GIL back from the event loop for every row returned: a RETURNING of each cost a hundred hand-offs a batch):
    a look for holds under their ids (a hold there means a row from the wrong caller: refused), a look for rows
    written already (a journal replayed twice: skipped), and one multi-row INSERT of the rest, which fails should
    another transaction write one meanwhile (the journal then writes its batch one by one). The rows that were new."""
    ids = [row.request_id for row, _ in rows]
    marks = ", ".join("?" * len(ids))
    held = yield Q(f"SELECT request_id, key_id FROM holds WHERE request_id IN ({marks})", ids)
    if held:
        raise _held_elsewhere(held[0][0], held[0][1], None)
    written = yield Q(f"SELECT request_id FROM usage WHERE request_id IN ({marks})", ids)
    if written:
        done = {request_id for (request_id,) in written}
        rows = [(row, price_id) for row, price_id in rows if row.request_id not in done]
        if not rows:
            return []
    values: list[Any] = []
    for row, price_id in rows:
        values += _usage_params(row, at, None, price_id)
    yield Q(_INSERT_USAGE_INTO + ", ".join([_USAGE_VALUES] * len(rows)), values)
    return [row for row, _ in rows]


def _finish_row(row: UsageRow, price_id: int | None, at: Micros, inherited: Limits = NO_LIMITS) -> Op[Finished]:
    """A request's row, its hold closed and its key's account written (not recorded when the row existed already;
    its rollup is the caller's). A local row (no key) has no hold of its own, but one under its request id means
    the row names the wrong caller: refused. A journaled row comes without its `inherited` limits: a budget it
    inherits needs none here (its spend is the rollups), and its tpm bucket keeps the admission's estimate."""
    key: KeyInfo | None = None
    account: Account | None = None
    held: Money | None = None
    estimate = 0
    if row.key_id is not None:
        key, account = yield from _locked_under(row.key_id, inherited)
    closed = yield Q("DELETE FROM holds WHERE request_id = ? RETURNING amount, tokens, key_id", (row.request_id,))
    if closed:
        held, estimate, hold_key = closed[0]
        if hold_key != row.key_id:
            raise _held_elsewhere(row.request_id, hold_key, row.key_id)
    inserted = yield Q(_INSERT_USAGE, _usage_params(row, at, held, price_id))
    c = row.cost
    if key is not None:
        assert account is not None  # read with the key
        if inserted:
            changed = admission.settle(key, account, held, c.charged, row.usage.tokens, estimate, at)
        else:
            changed = admission.release(account, held or 0)
        if changed != account:
            yield _write(key.id, changed)
    return Finished(bool(inserted), held)


def _usage_params(row: UsageRow, at: Micros, held: Money | None, price_id: int | None) -> tuple[Any, ...]:
    """The row's values for USAGE_COLUMNS (`at`: its time when the row has none)."""
    u, c = row.usage, row.cost
    return (
        row.request_id, row.time if row.time is not None else at, row.key_id, row.session, row.rule, row.model,
        row.provider, row.upstream_model, row.attempts, int(row.stream), row.status, row.error, u.input, u.output,
        u.cache_write_5m, u.cache_write_1h, u.cache_read, u.web_search, row.latency_ms, row.ttft_ms, c.upstream,
        c.charged, held, price_id, int(row.estimated), int(row.truncated),
    )


_Group = tuple[int, int, str, str]  # a rollup row's: (day, key id or 0, model, provider)
_counts_of = attrgetter(*_COUNTS)


def _add_to_rollups(rows: Sequence[UsageRow], at: Micros) -> Op[None]:
    """What new rows add to their days' rollups: a row per (day, key, model, provider), in that order, in one upsert
    (`ROWS_PER_INSERT` at a time): a statement less is a GIL hand-off less for SQLite's writer thread."""
    grouped: dict[_Group, list[UsageRow]] = {}
    for row in rows:
        day = (row.time if row.time is not None else at) // DAY
        grouped.setdefault((day, row.key_id or 0, row.model or "", row.provider or ""), []).append(row)
    groups = sorted(grouped)
    for start in range(0, len(groups), ROWS_PER_INSERT):
        chunk = groups[start:start + ROWS_PER_INSERT]
        values = [value for group in chunk for value in (*group, *_sums(grouped[group]))]
        yield Q(_UPSERT_ROLLUP_INTO + ", ".join([_ROLLUP_VALUES] * len(chunk)) + _ON_ROLLUP, values)


def _sums(rows: list[UsageRow]) -> list[int]:
    """The rows' `_ROLLUP_SUMS`: requests, errors, token counts, upstream and charged cost, charged per token class."""
    upstream = charged = 0
    by_class = dict.fromkeys(_COUNTS, 0)
    for row in rows:
        c = row.cost
        upstream += c.upstream
        charged += c.charged
        for line in c.lines:
            by_class[line.token_class] += line.charged
    failed = sum(row.error is not None or row.status >= 400 for row in rows)
    counts = [sum(column) for column in zip(*(_counts_of(row.usage) for row in rows), strict=True)]
    return [len(rows), failed, *counts, upstream, charged, *(by_class[n] for n in _COUNTS)]


def _held_elsewhere(request_id: str, hold_key: int, row_key: int | None) -> LedgerError:
    return LedgerError(f"request `{request_id}` was held on key {hold_key}, not {row_key}")


ANY_KEY = -1  # `session_charged`'s key: the session's rows whoever made them


def session_charged(session: str, key_id: int | None) -> Op[tuple[int, Money]]:
    """(priced rows, charged) of a session's rows made by `key_id` (None: the local caller), or anyone's (`ANY_KEY`)."""
    select = "SELECT COUNT(price_id), COALESCE(SUM(charged), 0) FROM usage WHERE session = ?"
    if key_id == ANY_KEY:
        rows = yield Q(select, (session,))
    elif key_id is None:
        rows = yield Q(select + " AND key_id IS NULL", (session,))
    else:
        rows = yield Q(select + " AND key_id = ?", (session, key_id))
    return int(rows[0][0]), int(rows[0][1])


def put_price(hash_: str, body: str) -> Op[int]:
    rows = yield Q("INSERT INTO prices (hash, body) VALUES (?, ?) ON CONFLICT (hash) DO NOTHING RETURNING id",
                   (hash_, body))
    if not rows:
        rows = yield Q("SELECT id FROM prices WHERE hash = ?", (hash_,))
    price_id: int = rows[0][0]
    return price_id


# --- instances and the sweep -----------------------------------------------------------------------------------------


@frozen
class InstanceRow:
    id: str
    host: str
    pid: int
    boot: str
    heartbeat_at: Micros
    stopped_at: Micros | None


def register(instance: InstanceRow, at: Micros) -> Op[None]:
    yield Q("INSERT INTO instances (id, host, pid, boot, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?)",
            (instance.id, instance.host, instance.pid, instance.boot, at, at))


def heartbeat(instance: str, at: Micros) -> Op[None]:
    yield Q("UPDATE instances SET heartbeat_at = ? WHERE id = ?", (at, instance))


@frozen
class Swept:
    holds: int
    amount: Money
    instances: int


def sweep(me: str, at: Micros, dead: Callable[[InstanceRow], bool], mine_too: bool = False) -> Op[Swept]:
    """Release the holds of instances that are gone (`dead`), and holds past their `expires_at` (a request can
    never last that long; this is what keeps a lost hold from blocking a key forever). `mine_too`: this instance is
    stopping, and its own holds go as well."""
    rows = yield Q("SELECT id, host, pid, boot, heartbeat_at, stopped_at FROM instances")
    gone = [r[0] for r in rows if (r[0] == me and mine_too) or (r[0] != me and dead(InstanceRow(*r)))]
    where, params = "expires_at <= ?", [at]
    if gone:
        where += f" OR instance IN {_in(gone)}"
        params += gone
    holds = yield Q(f"SELECT id, key_id FROM holds WHERE {where}", params)
    by_key: dict[int, list[int]] = {}
    for hold_id, key_id in holds:
        by_key.setdefault(key_id, []).append(hold_id)
    count = amount = 0
    for key_id in sorted(by_key):
        key, account = yield from _locked(key_id)
        ids = by_key[key_id]
        released = yield Q(f"DELETE FROM holds WHERE id IN {_in(ids)} RETURNING amount", ids)
        total = sum(r[0] for r in released)
        count += len(released)
        amount += total
        if released:
            yield _write(key_id, admission.release(account, total))
    if gone:
        yield Q(f"DELETE FROM instances WHERE id IN {_in(gone)}", gone)
    return Swept(count, amount, len(gone))


# --- the invariant ---------------------------------------------------------------------------------------------------


def audit(deep: bool) -> Op[list[str]]:
    """What breaks `balance = credits - settled - open holds` (empty: nothing). Per key: the account's counters
    against the records (credit entries, open holds, rollups); `deep` also checks the rollups against every usage
    row (a scan: for tests and `ccm db check`, not for each /health)."""
    problems: list[str] = []
    rows = yield Q(
        "SELECT k.id, k.name, k.balance, k.held, k.credited, k.settled, "
        "(SELECT COALESCE(SUM(amount), 0) FROM credits c WHERE c.key_id = k.id), "
        "(SELECT COALESCE(SUM(amount), 0) FROM holds h WHERE h.key_id = k.id), "
        "(SELECT COALESCE(SUM(charged), 0) FROM rollup_daily r WHERE r.key_id = k.id) "
        "FROM keys k ORDER BY k.id"
    )
    for _key_id, name, balance, held, credited, settled, credit_sum, hold_sum, charged_sum in rows:
        if balance != credited - settled - held:
            problems.append(f"key {name}: balance {balance} != credited {credited} - settled {settled} - held {held}")
        if credited != credit_sum:
            problems.append(f"key {name}: credited {credited} != sum of credit entries {credit_sum}")
        if held != hold_sum:
            problems.append(f"key {name}: held {held} != sum of open holds {hold_sum}")
        if settled != charged_sum:
            problems.append(f"key {name}: settled {settled} != sum of charged costs {charged_sum}")
    if deep:
        by_rows = yield Q("SELECT COALESCE(key_id, 0), COUNT(*), SUM(charged), SUM(upstream) FROM usage "
                          "GROUP BY COALESCE(key_id, 0)")
        by_rollup = yield Q("SELECT key_id, SUM(requests), SUM(charged), SUM(upstream) FROM rollup_daily "
                            "GROUP BY key_id")
        rows_map = {r[0]: tuple(int(v) for v in r[1:]) for r in by_rows}
        rollup_map = {r[0]: tuple(int(v) for v in r[1:]) for r in by_rollup}
        for key_id in sorted(set(rows_map) | set(rollup_map)):
            if rows_map.get(key_id) != rollup_map.get(key_id):
                problems.append(f"key id {key_id}: usage rows (count, charged, upstream) {rows_map.get(key_id)} != "
                                f"rollups {rollup_map.get(key_id)}")
    return problems
