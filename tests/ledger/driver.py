"""A ccm-like process for the multi-process and kill -9 tests: admits and settles requests on a shared ledger.

    python tests/ledger/driver.py URL KEY PREFIX COUNT CONCURRENCY DONE_FILE

Runs COUNT requests (0: until killed), CONCURRENCY at a time, on key KEY (`-`: the local caller, no hold); each
request holds one cent and costs one cent. After each settle returns, its request id is appended to DONE_FILE
(`settled ID`) or, when refused, `refused ID`; every fifth request settles twice, as a retrying caller would.
The kill -9 test reads DONE_FILE to know which settles returned before the process died.
"""

from __future__ import annotations

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ccm.ledger.ledger import Ledger  # noqa: E402
from ccm.ledger.refusals import Refusal
from tests.ledger.helpers import CENT, row  # noqa: E402


async def main(url: str, key_name: str, prefix: str, count: int, concurrency: int, done_path: str) -> None:
    ledger = await Ledger.open(url, heartbeat=0.5)
    await ledger.start()
    key = None if key_name == "-" else (await ledger.key(key_name))[0]
    done = open(done_path, "a", buffering=1)  # noqa: SIM115 - the workers below write to it; closed after them
    numbers = iter(range(count) if count else iter(int, 1))
    counter = 0

    async def worker() -> None:
        nonlocal counter
        for _ in numbers:
            counter += 1
            request_id = f"{prefix}-{os.getpid()}-{counter}"
            if key is None:
                await ledger.record(row(request_id))
                done.write(f"settled {request_id}\n")
                continue
            try:
                hold = await ledger.admit(key, request_id, CENT, 1000)
            except Refusal:
                done.write(f"refused {request_id}\n")
                continue
            await ledger.settle(hold, row(request_id, key_id=key.id))
            done.write(f"settled {request_id}\n")
            if counter % 5 == 0:
                await ledger.settle(hold, row(request_id, key_id=key.id))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    done.close()
    await ledger.stop()


if __name__ == "__main__":
    url, key_name, prefix, count, concurrency, done_path = sys.argv[1:7]
    asyncio.run(main(url, key_name, prefix, int(count), int(concurrency), done_path))
