"""wrk as the load generator for the latency and throughput workloads: one thread (the routers need the other
core), `connections` keep-alive connections POSTing one body, latency percentiles from wrk's own histogram
(microsecond resolution), printed as one JSON line by the Lua script's `done` hook.

    run(url, body, connections, seconds) -> Measured    (raises WrkFailed with wrk's own output when it fails)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SCRIPT = """
wrk.method = "POST"
{headers}
local file = io.open("{body_path}", "rb")
wrk.body = file:read("*a")
file:close()

done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format('\\nBENCH {{"requests":%d,"duration_us":%d,"p50_us":%.1f,"p90_us":%.1f,"p99_us":%.1f,' ..
    '"status_errors":%d,"socket_errors":%d}}\\n', summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), summary.errors.status, errors))
end
"""


class WrkFailed(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Measured:
    requests: int  # answered, of any status
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int  # non-2xx/3xx answers, connect/read/write errors and timeouts

    @property
    def rps(self) -> float:
        return (self.requests - self.errors) / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {"p50_ms": self.p50_ms, "p90_ms": self.p90_ms, "p99_ms": self.p99_ms, "rps": round(self.rps, 1),
                "requests": self.requests, "errors": self.errors}


def available() -> bool:
    return shutil.which("wrk") is not None


def run(url: str, body: bytes, connections: int, seconds: float, headers: dict[str, str],
        timeout_s: float = 30.0) -> Measured:
    with tempfile.TemporaryDirectory(prefix="ccm-wrk-") as folder:
        body_path = Path(folder) / "body.json"
        body_path.write_bytes(body)
        header_lines = "\n".join(f'wrk.headers["{name}"] = "{value}"'
                                 for name, value in {"content-type": "application/json", **headers}.items())
        script = Path(folder) / "post.lua"
        script.write_text(SCRIPT.format(headers=header_lines, body_path=body_path))
        command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", f"--timeout={timeout_s:g}s",
                   "-s", str(script), url]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + timeout_s + 30)
    line = next((line for line in done.stdout.splitlines() if line.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise WrkFailed(f"wrk exited {done.returncode}: {(done.stderr or done.stdout).strip()[-400:]}")
    data = json.loads(line[len("BENCH "):])
    return Measured(requests=data["requests"], seconds=data["duration_us"] / 1e6, p50_ms=data["p50_us"] / 1000,
                    p90_ms=data["p90_us"] / 1000, p99_ms=data["p99_us"] / 1000,
                    errors=data["status_errors"] + data["socket_errors"])
