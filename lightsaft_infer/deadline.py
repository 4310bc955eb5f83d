"""Deadline guard: finish every song before its budget, as accurately as time allows.

Before each window batch the guard picks the most accurate separation path
whose cost for this batch, plus the fastest path's cost for every window left
after it, still fits before the deadline. When even the fastest path cannot
finish the rest, it returns ``None``: the caller then fills the remaining
windows with a cheap estimate (the mixture divided among the sources), so four
valid stems are always written in time. Costs start from the setup
measurement and follow what the windows really take.
"""

from __future__ import annotations

import time

#: Cost estimates are multiplied by this before comparing with the time left.
SAFETY = 1.25


class DeadlineGuard:
    """``costs``: seconds per window of each path, most accurate first, e.g. ``{"exact": 1.6, "fast": 0.8}``."""

    def __init__(self, deadline: float, costs: dict, clock=time.perf_counter, safety: float = SAFETY):
        if not costs:
            raise ValueError("the guard needs at least one path")
        self.deadline, self.costs, self.clock, self.safety = deadline, dict(costs), clock, safety
        self.fill_cost = 0.0  # seconds per filled window (overlap-add and writing), as measured
        self.used: dict = {}

    def left(self) -> float:
        return self.deadline - self.clock()

    def choose(self, remaining: int, batch: int = 1):
        """Path for the next ``batch`` of ``remaining`` windows, or ``None`` for the cheap fill."""
        # Whatever is chosen, the fill must still fit for every window left: keep its time aside.
        left = self.left() - remaining * self.fill_cost * self.safety
        fastest = min(self.costs.values()) * self.safety
        after = max(remaining - batch, 0) * fastest
        for name, cost in self.costs.items():
            if batch * cost * self.safety + after <= left:
                return name
        return None

    def observe(self, name, seconds_per_window: float, windows: int = 1) -> None:
        """Record what a batch cost; the estimate moves halfway towards each new measurement."""
        key = name if name is not None else "fill"
        self.used[key] = self.used.get(key, 0) + windows
        if name is not None:
            self.costs[name] = 0.5 * self.costs[name] + 0.5 * seconds_per_window
        else:
            self.fill_cost = max(self.fill_cost, seconds_per_window)

    def summary(self) -> str:
        """e.g. ``"exact 12 windows, fast 3 windows"``."""
        return ", ".join(f"{k} {v} window{'s' * (v != 1)}" for k, v in self.used.items()) or "no windows"
