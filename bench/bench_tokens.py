"""Timings of local token counting and request validation on the captured Claude Code requests.

Run from the repository root: .venv/bin/python -m bench.bench_tokens   (not run in CI; prints best-of-N timings)

Every warm measurement counts a *freshly parsed* copy of the body, as the server does: the strings are new objects
whose hashes are not yet cached, so the cost includes hashing every piece.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from ccm.messages_request import check_request, parse_request
from ccm.tokens import TokenCounter, load_encoding
from tests.conftest import FIXTURES

BIG_REQUEST = "bash-tool-result-turn2.json"


def body_bytes(name: str) -> bytes:
    return orjson.dumps(orjson.loads((FIXTURES / name).read_bytes())["body"])


def best_of(run: Callable[[Any], Any], setup: Callable[[], Any], repeat: int = 200) -> float:
    """Best wall time of `run(setup())` in seconds, setup excluded."""
    best = float("inf")
    for _ in range(repeat):
        argument = setup()
        start = time.perf_counter()
        run(argument)
        best = min(best, time.perf_counter() - start)
    return best


def show(label: str, seconds: float) -> None:
    print(f"{label:<64} {seconds * 1e6:>10.1f} µs")


def next_turn(raw: bytes) -> bytes:
    body = orjson.loads(raw)
    body["messages"].append({"role": "assistant", "content": [{"type": "text", "text": "Done: the command ran."}]})
    body["messages"].append({"role": "user", "content": [{"type": "text", "text": "Now list the files, please."}]})
    return orjson.dumps(body)


def context_burst() -> list[bytes]:
    """26 count_tokens bodies shaped like one `/context`: system prompt sections, each tool alone, the messages,
    and fixtures a/b, built from the big request so they share its content."""
    big = orjson.loads(body_bytes(BIG_REQUEST))
    model = big["model"]
    bodies: list[dict[str, Any]] = [orjson.loads(body_bytes(name)) for name in ("count-tokens-context-a.json",
                                                                                "count-tokens-context-b.json")]
    for block in big["system"]:
        bodies.append({"model": model, "messages": [{"role": "user", "content": block["text"]}], "tools": []})
    for tool in big["tools"]:
        bodies.append({"model": model, "messages": [{"role": "user", "content": "foo"}], "tools": [tool]})
    bodies.append({"model": model, "messages": big["messages"], "tools": []})
    bodies.append({"model": model, "messages": big["messages"], "system": big["system"], "tools": big["tools"]})
    while len(bodies) < 26:
        bodies.append({"model": model, "messages": [{"role": "user", "content": f"section {len(bodies)}"}]})
    return [orjson.dumps(body) for body in bodies[:26]]


def main() -> None:
    start = time.perf_counter()
    load_encoding()
    show("load the cl100k encoding (once per process)", time.perf_counter() - start)

    raw = body_bytes(BIG_REQUEST)
    print(f"\nrequest: {BIG_REQUEST}, {len(raw):,} bytes")
    fresh = lambda: orjson.loads(raw)  # noqa: E731
    show("tiktoken on the whole request JSON (what an uncached router pays)",
         best_of(lambda body: load_encoding().encode_ordinary(orjson.dumps(body).decode()), fresh, 20))
    show("cold count (empty cache)", best_of(lambda body: TokenCounter().count(body), fresh, 20))
    counter = TokenCounter()
    counter.count(fresh())
    show("warm count (same request again)", best_of(counter.count, fresh))
    turn = next_turn(raw)
    # Each repetition starts from a copy of the warmed cache, so the two new messages are cold every time.
    show("warm count, next turn (same system + tools, two more messages)",
         best_of(lambda pair: pair[0].count(pair[1]), lambda: (copy_of(counter), orjson.loads(turn))))

    burst = context_burst()

    def run_burst(cold: bool) -> float:
        # What the server does per request of the burst: parse and validate the body, then count it.
        best = float("inf")
        for _ in range(20):
            burst_counter = TokenCounter()
            if not cold:
                burst_counter.count(orjson.loads(raw))  # the session's last turn already warmed the cache
            start = time.perf_counter()
            for body in burst:
                burst_counter.count(parse_request(body, count_only=True))
            best = min(best, time.perf_counter() - start)
        return best

    show("/context burst, 26 requests parsed + counted, cache empty", run_burst(cold=True))
    show("/context burst, 26 requests parsed + counted, after a turn", run_burst(cold=False))

    print("\nvalidation (ccm.messages_request)")
    show("orjson.loads alone", best_of(orjson.loads, lambda: raw, 2000))
    show("check_request (structure + depth probe; the target is < 30 µs)", best_of(check_request, fresh, 2000))
    show("parse_request (loads + check_request)", best_of(parse_request, lambda: raw, 2000))


def copy_of(counter: TokenCounter) -> TokenCounter:
    copy = TokenCounter()
    copy._counts = dict(counter._counts)
    return copy


if __name__ == "__main__":
    main()
