"""Server time of each admin page (figures in docs/ui.md), in-process (httpx over ASGI: no socket, no browser), on the
repository's routes.ccm with 500 finished requests in the live feed (RecentRecords' capacity). Run by hand:
`.venv/bin/python bench/bench_pages.py [ROUNDS]`. Prints p50 and p90 per page in ms.

The 1M-usage-rows part of the target (p50 <= 50 ms per page) comes with the ledger's pages."""

from __future__ import annotations

import asyncio
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from ccm.core.record import Attempt, RequestRecord, TokenUsage  # noqa: E402
from ccm.service import ServiceOptions, build_service  # noqa: E402
from ccm.web import mount_pages  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
GETS = ["/admin/", "/admin/routes", "/admin/editor", "/admin/history", "/admin/api/feed?after="]


def _record(i: int) -> RequestRecord:
    return RequestRecord(f"req_{i}", time.time(), "POST", "/v1/messages", 200 if i % 7 else 529, 812.0,
                         requested_model="claude-opus-5-5", rule="default", rule_index=8, model="opus",
                         target="anthropic/claude-opus-5-5", usage=TokenUsage(12_000, 800),
                         attempts=(Attempt("anthropic", "opus", "claude-opus-5-5", 200, None if i % 7 else "529",
                                           700.0),))


async def main(rounds: int) -> None:
    folder = Path(tempfile.mkdtemp())
    shutil.copy(REPO / "routes.ccm", folder / "routes.ccm")
    service = build_service(folder / "routes.ccm", {}, ServiceOptions(watch=False))
    mount_pages(service, {})
    for i in range(500):
        service.recent(_record(i))
    async with service.running():
        transport = httpx.ASGITransport(app=service.app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:3456") as http:
            first = await http.get("/admin/editor")
            token = re.search(r'data-csrf="([^"]+)"', first.text).group(1)  # type: ignore[union-attr]
            text = (await http.get("/admin/api/file")).json()["text"]
            posts = {"/admin/api/check": {"text": text}, "/admin/api/diff": {"text": text + "\n# x\n"}}
            for path in GETS + list(posts):
                times = []
                for _ in range(rounds):
                    start = time.perf_counter()
                    if path in posts:
                        response = await http.post(path, json=posts[path], headers={"x-csrf-token": token})
                    else:
                        response = await http.get(path)
                    times.append((time.perf_counter() - start) * 1000)
                    assert response.status_code == 200, (path, response.status_code)
                times.sort()
                print(f"{path:28s} p50 {statistics.median(times):6.1f} ms   p90 {times[int(len(times) * .9)]:6.1f} ms")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50))
