"""Deadline guard: finish every song before its budget, as accurately as the budget allows.

Paths are ordered most accurate first (``exact``, then ``fast`` if there is one); the *fill* (the
mixture divided among the sources, a valid if poor estimate) costs almost nothing. Before each
window batch the guard plans the rest of the song with the expected cost of each path:

1. as many windows as possible go through a network path (the fill only where even the fastest
   path cannot finish), then
2. as many of those as possible take the exact path (when some windows must be filled anyway, what
   is left over stays their buffer instead of buying upgrades).

The batch takes a path the plan gives it (planned paths are timed early and interleaved, so that
every estimate stays fresh; the fill comes at the end, and gives back what it saves), provided that this
batch at a *pessimistic* cost, plus the fill for every window after it, still ends before the
deadline: whatever happens, the song is always finished in time. Planning again before every batch
spends what earlier windows saved and takes back what they overran, so the song finishes with a
margin of about one window, not with a reserve per window.

Costs start from the setup measurement (planned at twice that until this song has timed the path,
since setup may be off by half either way), are replaced by the song's own first measurement, then
follow what windows really take. ``reserve()`` sets time aside for what comes after the last window
(resampling back to the input's rate, the final writes). See ``docs/robustness.md`` for the
measurements.
"""

from __future__ import annotations

import math
import time

#: A path's cost before this song has measured it is taken as this multiple of the setup estimate.
UNMEASURED = 2.0
#: A measured path's next window is assumed to take at most this multiple of its running mean ...
SPREAD = 1.25
#: ... or the slowest of its recent windows, whichever is more.
RECENT = 4
#: Weight of each new measurement in a path's running mean.
FOLLOW = 0.25
#: The fill's cost per window (overlap-add and writing) before it is measured, in seconds.
FILL_DEFAULT = 0.01


class _Cost:
    """Running estimate of one path's seconds per window."""

    def __init__(self, estimate: float, unmeasured: float = UNMEASURED):
        self.mean, self.measured, self.recent = max(float(estimate), 0.0), 0, []
        self.unmeasured = unmeasured

    def observe(self, seconds: float) -> None:
        # The song's own first measurement replaces the setup's; then a running mean that follows a
        # lasting change within a few windows without being thrown about by a single one (a plan made
        # on a momentarily low estimate spends time that later windows need).
        self.mean = seconds if not self.measured else (1 - FOLLOW) * self.mean + FOLLOW * seconds
        self.measured += 1
        self.recent = (self.recent + [seconds])[-RECENT:]

    @property
    def pessimistic(self) -> float:
        if not self.measured:
            return self.unmeasured * self.mean
        return max(SPREAD * self.mean, max(self.recent))


class _Scaled:
    """A path that is ``factor`` runs of another's network per window (``exact+k``: the exact pass and ``k``
    augmented ones, ``factor = 1 + k``): it shares that path's estimate, so that the exact pass's measurement
    prices every number of passes at once instead of each tier waiting for a window of its own at twice its
    setup estimate. Each of its windows is a measurement of the base path too. A tier's window pays the
    reading and overlap-add once, not ``factor`` times, so the shared estimate errs on the safe side."""

    def __init__(self, base: _Cost, factor: float):
        self.base, self.factor = base, float(factor)

    def observe(self, seconds: float) -> None:
        self.base.observe(seconds / self.factor)

    @property
    def mean(self) -> float:
        return self.factor * self.base.mean

    @property
    def measured(self) -> int:
        return self.base.measured

    @property
    def pessimistic(self) -> float:
        return self.factor * self.base.pessimistic


class DeadlineGuard:
    """``costs``: seconds per window of each path, most accurate first, e.g. ``{"exact": 1.6, "fast": 0.8}``;
    ``fill_cost``: seconds per filled window if known; ``clock``: a ``time.perf_counter``-like callable;
    ``scaled``: ``{name: (base, factor)}`` for paths that cost ``factor`` windows of path ``base`` (their entry
    in ``costs`` is then ignored)."""

    def __init__(self, deadline: float, costs: dict, clock=time.perf_counter, fill_cost: float | None = None,
                 secure: str | None = None, scaled: dict | None = None):
        if not costs:
            raise ValueError("the guard needs at least one path")
        if secure is not None and secure not in costs:
            raise ValueError(f"the path to secure, {secure!r}, is not one of {list(costs)}")
        #: The path every window should get before any window gets a more accurate one (``exact`` below the
        #: augmented passes): those are planned only with what is left once each remaining window's ``secure``
        #: pass is budgeted at its pessimistic cost, so that a pass bought early is never paid for by a filled
        #: window later.
        self.secure = secure
        self.deadline, self.clock = deadline, clock
        self.paths = {name: _Cost(c) for name, c in costs.items()}
        for name, (base, factor) in (scaled or {}).items():
            if name not in costs or base not in costs or base in (scaled or {}):
                raise ValueError(f"scaled path {name!r}: {name!r} and its base {base!r} must both be paths, the base unscaled")
            self.paths[name] = _Scaled(self.paths[base], factor)
        # The fill is setup's own code without the network: its estimate is trusted like a measurement.
        self.fill = _Cost(FILL_DEFAULT if fill_cost is None else fill_cost, unmeasured=SPREAD)
        self.fill_own = self.fill.mean  # what the fill itself computes per window, without reading and writing
        self.tail = 0.0  # seconds reserved for the work after the last window
        self.used: dict = {}
        #: One line per path dropped during the song (its backend failed), for the song's warnings.
        self.failures: list = []

    @property
    def costs(self) -> dict:
        """Current expected seconds per window of each path."""
        return {name: c.mean for name, c in self.paths.items()}

    @property
    def fill_cost(self) -> float:
        return self.fill.mean

    def drop(self, path: str, why: str) -> None:
        """Stop using ``path`` and every tier built on it (``exact+2`` on ``exact``) for the rest of the song:
        its backend failed. The next most accurate path takes its windows, the fill if none is left."""
        for name in [n for n in self.paths if n.partition("+")[0] == path]:
            del self.paths[name]
        if self.secure is not None and self.secure not in self.paths:
            self.secure = None
        self.failures.append(f"the {path} path failed ({why}); its windows went to the next path")

    def reserve(self, seconds: float) -> None:
        """Keep ``seconds`` free before the deadline for what follows the last window."""
        self.tail = max(0.0, float(seconds))

    def left(self) -> float:
        """Seconds the windows may still use."""
        return self.deadline - self.tail - self.clock()

    def plan(self, remaining: int, left: float | None = None) -> dict:
        """Windows per path for the ``remaining`` ones at expected costs (pessimistic ones for paths this
        song has not timed): network windows first, then exact ones. ``{"exact": x, "fast": f, None: fill}``."""
        left = self.left() if left is None else left
        names = list(self.paths)
        fill = self.fill.mean
        # A path this song has not timed is planned at its pessimistic cost: a setup estimate that was too
        # low must not buy a window that costs several windows of the faster path.
        mean = {n: c.mean if c.measured else c.pessimistic for n, c in self.paths.items()}
        counts = dict.fromkeys(names, 0)
        budget = left - remaining * fill  # beyond filling everything
        if budget <= 0 or remaining <= 0 or not names:
            counts[None] = max(remaining, 0)
            return counts
        if math.isinf(budget):  # no deadline
            counts[names[0]], counts[None] = remaining, 0
            return counts
        # A less accurate path that is not cheaper than a more accurate one is never worth planning.
        tiers = []
        for name in names:
            if not tiers or mean[name] < mean[tiers[-1]]:
                tiers.append(name)
        # Upgrade windows step by step from the cheapest tier to the most accurate one: first every
        # window that fits onto the fastest network path, then as many as fit one tier up, and so on.
        upgraded = remaining
        previous = fill
        # the least accurate tier above the secured one: before upgrading to it (every window has reached the
        # secured tier), keep each window's margin on the secured path
        above = tiers[: tiers.index(self.secure)] if self.secure in tiers else []
        first_above = above[-1] if above else None
        for name in reversed(tiers):
            if name == first_above:
                budget -= upgraded * (self.paths[self.secure].pessimistic - mean[self.secure])
                if budget <= 0:
                    break
            step = mean[name] - previous
            n = min(upgraded, int(math.floor(budget / step + 1e-9))) if step > 0 else upgraded
            counts[name] = n
            budget -= n * max(step, 0.0)
            upgraded, previous = n, mean[name]
            if n < remaining:  # some windows must be filled: what is left (less than one window of this
                break  # path) is their buffer against estimates that turn out low, not for upgrades
        # counts[name] now holds how many windows reach *at least* that tier: make them exclusive.
        for fast, slow in zip(reversed(tiers), reversed(tiers[:-1])):
            counts[fast] -= counts[slow]
        counts[None] = remaining - sum(counts[n] for n in names)
        return counts

    def choose(self, remaining: int, batch: int = 1):
        """Path for the next ``batch`` of ``remaining`` windows, or ``None`` for the fill."""
        # The fill is planned last, but a window filled does not end the song's network windows: when the
        # fill turns out cheaper than planned (its first estimate carries the reading and resampling of a
        # network window), the time it saved goes back to network windows.
        left = self.left()
        plan = self.plan(remaining, left)
        after = max(remaining - batch, 0) * self.fill.pessimistic  # the fill must always fit for the rest

        def safe(cost):
            return batch * cost.pessimistic + after <= left

        # With augmented passes on, the secured path (exact) is timed first where it is safe: timing a faster
        # path first would spend a window on it that the exact pass's real cost may well have afforded, and
        # every window's exact pass comes before any pass is bought.
        secure = self.paths.get(self.secure) if self.secure else None
        if secure is not None and not secure.measured and safe(secure):
            return self.secure
        # A path the plan needs but this song has not timed yet is timed now, while a misjudged setup
        # estimate can still be made up for (the order of windows does not change the plan's totals);
        # the fastest first, since it tells how many windows the budget can carry at all.
        for name, cost in reversed(self.paths.items()):
            if plan[name] >= batch and not cost.measured and safe(cost):
                return name
        # Planned windows of each path are spread evenly over the song (the order does not change the
        # totals), so that every path's estimate stays fresh: a plan that leaves all fast windows to the
        # end rests on one old measurement of the fast path.
        done = sum(self.used.values())
        total = done + remaining
        choice, deficit = None, -math.inf
        for name, cost in self.paths.items():
            if plan[name] >= batch and safe(cost):
                used = self.used.get(name, 0)
                behind = (used + plan[name]) * (done + batch) / total - used
                if behind > deficit:
                    choice, deficit = name, behind
        if choice is not None:
            return choice
        reached = 0
        for name, cost in self.paths.items():
            reached += plan[name]  # windows planned on this path or a more accurate one
            if reached >= batch and safe(cost):
                return name
        return None

    def observe(self, name, seconds_per_window: float, windows: int = 1, overhead: float | None = None) -> None:
        """Record what a batch cost per window (``name`` None: the fill). ``overhead``: the part of a network
        window's cost spent reading, overlap-adding and writing it, which a filled window pays as well."""
        key = name if name is not None else "fill"
        self.used[key] = self.used.get(key, 0) + windows
        (self.paths[name] if name is not None else self.fill).observe(seconds_per_window)
        if name is not None and overhead is not None and "fill" not in self.used:
            # Setup times the fill's own arithmetic only; in a song each filled window is also read and
            # written, on a machine that may be busier than at setup (measured: 2-15 ms at setup, 17-55 ms
            # in the stream, on 2 contended cores). Until the fill times itself, it costs what network
            # windows spend besides the network.
            self.fill.observe(self.fill_own + overhead)

    def summary(self) -> str:
        """e.g. ``"exact 12 windows, fast 3 windows"``."""
        return ", ".join(f"{k} {v} window{'s' * (v != 1)}" for k, v in self.used.items()) or "no windows"
