"""The ledger: what the request path and the CLI call. One `Ledger` per process, over one `Store`.

    async with await Ledger.open(url) as ledger:        # lifespan: registers this instance, sweeps, heartbeats
        key = await ledger.authenticate(secret)         # None: not a ccm key; else check key.status(now)
        hold = await ledger.admit(key, request_id, hold_amount, tokens)   # or a Refusal (401/402/429)
        ...
        await ledger.settle(hold, row)                  # the answer ended: cost debited, row written, hold closed
        await ledger.release(hold, row)                 # it failed: same transaction, the row's (partial) cost
        await ledger.record(row)                        # no hold (the local caller, or a key with nothing to check)

Each process is an instance with an id and a heartbeat. Every `heartbeat` seconds it also sweeps: the holds of an
instance that is gone are released — on this host at once (its process is not running, checked by pid and process
start time), on another host when its heartbeat is older than `lease` seconds — and so is any hold older than
`hold_ttl`, whoever owns it. A process killed with -9 therefore leaves no hold behind after the next start or
sweep of any instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from types import TracebackType

from ccm.ledger import keys as secrets
from ccm.ledger.errors import BadInput, LedgerUnavailable
from ccm.ledger.money import Money
from ccm.ledger.records import NO_LIMITS, Account, Hold, KeyInfo, Limits, NewKey, UsageRow
from ccm.ledger.store import ops
from ccm.ledger.store.base import Op, Store
from ccm.ledger.store.connect import open_store
from ccm.ledger.times import HOUR, SECOND, Clock, Micros, Period, now
from ccm.processes import process_marker, running

log = logging.getLogger("ccm.ledger")

# How long a request waits on the database for one operation (a key looked up, a hold, a settle) before it is
# treated as unreachable: milliseconds when it answers, so this only ends the wait on a server that stopped
# answering (a dropped network, a hung host), which would otherwise hold the request for the driver's 60 s per
# statement, and every other request queued behind the pool's busy connections.
REQUEST_DEADLINE_S = 5.0
HEARTBEAT_S = 5.0
LEASE_S = 30.0
HOLD_TTL = 2 * HOUR  # far beyond the longest request ccm lets run (the default total timeout is 30 minutes)


class Ledger:
    def __init__(self, store: Store, *, clock: Clock = now, instance: str | None = None,
                 heartbeat: float = HEARTBEAT_S, lease: float = LEASE_S, hold_ttl: Micros = HOLD_TTL,
                 auth_cache: float = 0.0) -> None:
        self.store = store
        self.clock = clock
        self.instance = instance or uuid.uuid4().hex
        self.host = socket.gethostname()
        self.heartbeat_s = heartbeat
        self.lease = int(lease * SECOND)
        self.hold_ttl = hold_ttl
        self._prices: dict[str, int] = {}
        # Off by default: every authenticate reads the database, so a revocation is seen at once everywhere.
        self.auth_cache = auth_cache
        # secret hash -> (cached until, the key as last read): the cache, and `last_seen`'s memory
        self._keys: dict[str, tuple[float, KeyInfo]] = {}
        self._task: asyncio.Task[None] | None = None
        self._registered = False

    @classmethod
    async def open(cls, url: str, *, create: bool = True, **options: object) -> Ledger:
        """The ledger over the database at `url`, its schema checked (see `open_store`). Call `start()` (or use it
        as an async context manager) before admitting: that registers the instance and sweeps."""
        store = await open_store(url, create=create)
        return cls(store, **options)  # type: ignore[arg-type]

    # --- lifespan ---------------------------------------------------------------------------------------------------

    async def start(self, *, background: bool = True) -> None:
        """Register this instance, release what dead instances held, and (with `background`) heartbeat and sweep
        every `heartbeat` seconds until `stop`."""
        marker = process_marker(os.getpid())
        row = ops.InstanceRow(self.instance, self.host, os.getpid(), marker, 0, None)
        await self.store.run(ops.register(row, self.clock()))
        self._registered = True
        swept = await self.sweep()
        if swept.holds:
            log.info("released %d holds (%d nano-dollars) of %d stopped instances", swept.holds, swept.amount,
                     swept.instances)
        if background:
            self._task = asyncio.create_task(self._beat(), name="ccm-ledger-heartbeat")

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self.store.run(ops.heartbeat(self.instance, self.clock()), deadline=REQUEST_DEADLINE_S)
                await self.sweep()
            except LedgerUnavailable as error:
                log.warning("ledger heartbeat failed: %s", error)

    async def stop(self) -> None:
        """Stop heartbeating, release this instance's own open holds (their requests are over: the server drains
        before the ledger stops), and close the store."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            if self._registered:
                await self.store.run(ops.sweep(self.instance, self.clock(), self._dead, mine_too=True),
                                     deadline=REQUEST_DEADLINE_S)
        finally:
            await self.store.close()

    async def __aenter__(self) -> Ledger:
        await self.start()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    def _dead(self, instance: ops.InstanceRow) -> bool:
        at = self.clock()
        if instance.stopped_at is not None:
            return True
        if instance.host == self.host:
            if not running(instance.pid):
                return True
            if instance.boot:  # Linux: the pid must still be the same, living process
                return process_marker(instance.pid) != instance.boot
        return instance.heartbeat_at < at - self.lease

    async def sweep(self) -> ops.Swept:
        swept: ops.Swept = await self.store.run(ops.sweep(self.instance, self.clock(), self._dead),
                                                deadline=REQUEST_DEADLINE_S)
        return swept

    # --- the request path -------------------------------------------------------------------------------------------

    async def authenticate(self, secret: str) -> KeyInfo | None:
        """The key a secret belongs to, read from the database (so a revocation anywhere is seen at once); None for
        a secret that is no ccm key. The caller refuses a key whose `status(now)` is not "active".

        With `auth_cache` seconds, a key found is remembered that long: a revocation on another instance is then
        seen within that time by requests that skip `admit` (a key with nothing to check); `admit` always reads
        the key's row under its lock, so a revoked key never holds credit, budget or rate, cache or not."""
        if not secrets.looks_like_secret(secret):
            return None
        digest = secrets.secret_hash(secret)
        if self.auth_cache:
            cached = self._keys.get(digest)
            if cached is not None and cached[0] > time.monotonic():
                return cached[1]
        found: KeyInfo | None = await self.store.run(ops.find_secret(digest), write=False,
                                                     deadline=REQUEST_DEADLINE_S)
        if found is None:
            self._keys.pop(digest, None)
            return None
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[digest] = (time.monotonic() + self.auth_cache, found)
        return found

    def last_seen(self, secret: str) -> KeyInfo | None:
        """The key `secret` belonged to when the database last answered for it (`ledger fail open` serves a key
        with nothing to check by it while the database cannot be reached); None when it never did."""
        seen = self._keys.get(secrets.secret_hash(secret)) if secrets.looks_like_secret(secret) else None
        return seen[1] if seen is not None else None

    async def ping(self) -> None:
        """One round trip to the database: `LedgerUnavailable` when it cannot be reached."""
        await self.store.run(ops.ping(), write=False, deadline=REQUEST_DEADLINE_S)

    async def admit(self, key: KeyInfo, request_id: str, hold: Money, tokens: int, *,
                    minimum: Money | None = None, inherited: Limits = NO_LIMITS) -> Hold:
        """Hold `hold` for a request estimated at `tokens` tokens, counting it against rpm and tpm; atomic on the
        key's row. `minimum`: when less than `hold` is available but at least this, hold what is available (the
        request path then extends as the answer grows, and stops it when it cannot). `inherited`: the budget and
        limits of the key's plan and team (`limits_of`), checked where the key sets none itself. Raises a
        `Refusal`."""
        if hold < 0 or tokens < 0:
            raise BadInput("a hold and a token estimate are never negative")
        at = self.clock()
        result: Hold = await self.store.run(
            ops.admit(key.id, request_id, hold, tokens, minimum, self.instance, at, at + self.hold_ttl, inherited),
            deadline=REQUEST_DEADLINE_S)
        return result

    async def extend(self, hold: Hold, amount: Money) -> Hold:
        """Hold `amount` more for a request in flight (a long answer). Raises `OutOfCredit`/`OverBudget`."""
        if amount <= 0:
            raise BadInput("an extension holds a positive amount")
        result: Hold = await self.store.run(ops.extend(hold, amount, self.clock()), deadline=REQUEST_DEADLINE_S)
        return result

    async def settle(self, hold: Hold | None, row: UsageRow) -> bool:
        """The request ended: write its row, debit its charged cost, close its hold, in one transaction.
        Idempotent by request id: False when the row existed (a retried settle charges nothing more)."""
        if hold is not None:
            if hold.request_id != row.request_id:
                raise BadInput(f"the hold is for request `{hold.request_id}`, the row for `{row.request_id}`")
            if row.key_id is None:
                row = replace(row, key_id=hold.key.id)
        return await self._finish(row, hold.key.inherited if hold is not None else NO_LIMITS)

    async def release(self, hold: Hold | None, row: UsageRow) -> bool:
        """The request failed: the same transaction as `settle`. The row says the status and error; its cost is what
        the upstream billed for it (zero when it billed nothing, its partial usage when it reported some), because
        that is what was spent."""
        return await self.settle(hold, row)

    async def record(self, row: UsageRow) -> bool:
        """A request that held nothing: the local caller (`key_id` None), or a key with nothing to check."""
        return await self._finish(row)

    async def record_many(self, rows: Sequence[UsageRow]) -> int:
        """`record` for each row, in one transaction (the journal's batches): how many were new. A row the ledger
        refuses fails them all; `record` them one by one to find it."""
        priced = [(row, None if row.price is None else await self._price_id(row)) for row in rows]
        recorded: int = await self.store.run(ops.finish_all(priced, self.clock()))
        return recorded

    async def _finish(self, row: UsageRow, inherited: Limits = NO_LIMITS) -> bool:
        price_id = await self._price_id(row)
        finished: ops.Finished = await self.store.run(ops.finish(row, price_id, self.clock(), inherited),
                                                      deadline=REQUEST_DEADLINE_S)
        return finished.recorded

    async def _price_id(self, row: UsageRow) -> int | None:
        """The id of the row's price snapshot, stored the first time it is seen."""
        snapshot = row.price_snapshot()
        if snapshot is None:
            return None
        price_id = self._prices.get(snapshot[0])
        if price_id is None:
            price_id = await self.store.run(ops.put_price(*snapshot), deadline=REQUEST_DEADLINE_S)
            self._prices[snapshot[0]] = price_id
        return price_id

    async def session_charged(self, session: str, key_id: int | None = ops.ANY_KEY) -> Money | None:
        """What a Claude Code session's requests were charged: those of `key_id` (None: the local caller's), by
        default anyone's. None when it has no row."""
        count, charged = await self.store.run(ops.session_charged(session, key_id), write=False)
        return charged if count else None

    async def audit(self, *, deep: bool = False) -> list[str]:
        """What breaks the invariant `balance = credits - settled - open holds` (empty when nothing does)."""
        problems: list[str] = await self.store.run(ops.audit(deep), write=False)
        return problems

    # --- keys and credits (the CLI) ---------------------------------------------------------------------------------

    async def create_key(self, new: NewKey) -> tuple[KeyInfo, str]:
        """A new key and its secret (shown once: only its hash is stored)."""
        secret = secrets.new_secret()
        key: KeyInfo = await self.store.run(
            ops.create_key(new, secrets.secret_hash(secret), secrets.display_prefix(secret), self.clock()))
        return key, secret

    async def key(self, name: str) -> tuple[KeyInfo, Account]:
        found: tuple[KeyInfo, Account] = await self.store.run(ops.get_key(name), write=False)
        return found

    async def spent_inherited(self, keys: Sequence[KeyInfo]) -> list[Money | None]:
        """What each key (as `KeyInfo.under` made it) was charged in the current period of the budget it takes from
        its plan or team, as admission counts it; None where its budget, if any, is its own. One read for them all
        (a page of keys)."""
        at = self.clock()

        def each() -> Op[list[Money | None]]:
            spent = []
            for key in keys:
                spent.append((yield from ops.spent_inherited(key, at)))
            return spent

        spent: list[Money | None] = await self.store.run(each(), write=False)
        return spent

    async def keys(self) -> list[tuple[KeyInfo, Account]]:
        found: list[tuple[KeyInfo, Account]] = await self.store.run(ops.list_keys(), write=False)
        return found

    async def keys_page(self, *, after: str | None = None, limit: int = 100,
                        contains: str | None = None) -> list[tuple[KeyInfo, Account]]:
        """A page of keys in name order (the admin's list): after the name `after`, names containing `contains`."""
        found: list[tuple[KeyInfo, Account]] = await self.store.run(ops.page_keys(after, limit, contains),
                                                                    write=False)
        return found

    async def revoke(self, name: str) -> KeyInfo:
        key: KeyInfo = await self.store.run(ops.revoke(name, self.clock()))
        return key

    async def rotate(self, name: str, grace: Micros) -> tuple[KeyInfo, str]:
        if grace < 0:
            raise BadInput("a grace period is never negative")
        secret = secrets.new_secret()
        at = self.clock()
        key: KeyInfo = await self.store.run(
            ops.rotate(name, secrets.secret_hash(secret), secrets.display_prefix(secret), at + grace, at))
        return key, secret

    async def set_limits(self, name: str, *, budget: Money | None, period: Period | None, rpm: int | None,
                         tpm: int | None) -> KeyInfo:
        """Replace a key's budget and rate limits (None: none). A budget needs its period."""
        if (budget is None) != (period is None):
            raise BadInput("a budget and its period go together", "e.g. a budget of 50 per month")
        if budget is not None and budget <= 0:
            raise BadInput("a budget is a positive amount")
        if any(limit is not None and limit < 1 for limit in (rpm, tpm)):
            raise BadInput("a rate limit is a whole number of at least 1")
        key: KeyInfo = await self.store.run(ops.set_limits(name, budget, period, rpm, tpm, self.clock()))
        return key

    async def add_credits(self, name: str, amount: Money, note: str | None = None) -> Account:
        if amount <= 0:
            raise BadInput("credits added are a positive amount")
        account: Account = await self.store.run(ops.add_credits(name, amount, note, self.clock()))
        return account


@contextlib.asynccontextmanager
async def opened(url: str, *, create: bool = True) -> AsyncIterator[Ledger]:
    """A ledger for one command (the CLI): no instance registered, no heartbeat; closed at the end."""
    ledger = await Ledger.open(url, create=create)
    try:
        yield ledger
    finally:
        await ledger.store.close()
