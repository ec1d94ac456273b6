"""Processes on this machine, by pid: whether one is running, and what tells it from a later one with the same pid.

    running(pid)          the ledger's sweep (holds of a dead process) and `ccm status` (routers that are gone)
    process_marker(pid)   the boot and the process's start time (Linux), recorded with an instance
"""

from __future__ import annotations

import os
from pathlib import Path


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_marker(pid: int) -> str:
    """What tells this process from a later one with the same pid: the boot and the process's start time (Linux);
    empty where /proc does not exist, or for a process that has exited (a zombie not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    if fields[0] in ("Z", "X"):
        return ""
    return f"{_boot_id()}:{fields[19]}"  # field 22: the start time, in clock ticks since boot


def running(pid: int) -> bool:
    """Whether a process with this pid exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
