"""How many cores this process may use, for sizing CPU-bound work (bcrypt, image decoding)."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores the process may run on (its CPU affinity, which `taskset` and container cpusets narrow), or the
    machine's count where the platform cannot say."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
