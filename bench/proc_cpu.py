"""CPU seconds a process has used, read from Linux /proc (what the benchmarks charge per message)."""

from __future__ import annotations

import os
from pathlib import Path


def cpu_seconds(pid: int) -> float | None:
    """user+system CPU of a process and its waited-for children; None when it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick
    except (OSError, IndexError, ValueError):
        return None


def cpu_seconds_all(pids: list[int]) -> float | None:
    values = [cpu_seconds(p) for p in pids]
    return None if any(v is None for v in values) else sum(values)
