"""The ledger: keys, holds, credits, budgets, rate limits, usage rows and their cost, exact under concurrency.

    money.py      Money: integer nano-dollars; parse_usd / format_usd / cents
    usage.py      Usage (tokens per billed class) and the pure readers of each upstream's usage shape
    cost.py       cost(usage, price, markup) -> Cost: Decimal, rounded once
    holds.py      hold_for / minimum_for / OutputMeter: how much to hold, and growing it as an answer streams
    admission.py  the arithmetic of admit / extend / settle / release on a key's Account (pure)
    records.py    KeyInfo, Account, Hold, UsageRow, NewKey
    ledger.py     Ledger: what the request path and the CLI call; instances, heartbeat, sweep, audit
    reports.py    usage / billing / exports;  apis.py: Anthropic Admin API and OpenRouter /key shapes
    store/        the Store interface, SQLite and PostgreSQL drivers, the operations as SQL, migrations
    errors.py     the exception tree

The invariant, per key: balance = credits - settled - open holds (`Ledger.audit`). docs/keys-and-credits.md.
"""
