"""How many threads the CPU quota actually grants this process."""

from __future__ import annotations

import math
import os

ENV = "LIGHTSAFT_NUM_THREADS"


def _cgroup_quota() -> float | None:
    """CPUs allowed by a cgroup v2 (``cpu.max``) or v1 (``cfs_quota_us``) limit, if any."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
            if quota != "max":
                return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period = int(f.read())
        if quota > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def granted() -> int:
    """Threads this process may really run at once: min(CPU affinity, cgroup quota), at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def cpu_threads(requested: int | None = None) -> int:
    """``requested`` threads (else ``$LIGHTSAFT_NUM_THREADS``, else :func:`granted`), capped at :func:`granted`:
    more threads than the CPUs granted only contend for them (and 100,000 would exhaust memory)."""
    value = requested if requested is not None else os.environ.get(ENV) or None
    if value is None:
        return granted()
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{ENV} must be a whole number of threads, not {value!r:.40}") from None
    if n < 1:
        raise ValueError(f"the number of threads must be at least 1, not {n}")
    return min(n, granted())
