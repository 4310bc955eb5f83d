"""Augmented passes (``--shifts``): each undone exactly, averaged as promised, memory flat, and spent by the
deadline guard only after every window's exact pass is secured (a simulated clock)."""

import itertools
import tracemalloc

import numpy as np
import pytest

from lightsaft_infer.augment import Pass, check_passes, default_order
from lightsaft_infer.backends import Backend
from lightsaft_infer.deadline import DeadlineGuard
from lightsaft_infer.separator import Separator

from .conftest import IdentityBackend
from .test_deadline import FakeClock

SR = 44100


class Gated(Backend):
    """A network that is not linear, not odd and not symmetric in its channels: every source is the input
    spectrogram gated by a sigmoid of its first channel, so that a shift, a swap and a flip each change
    what it computes (and only undoing them correctly brings the passes back into line)."""

    name = "gated"

    def __init__(self, config):
        self.config = config

    def __call__(self, spec):
        gate = 0.5 * (1 + np.tanh(spec[:, :1] / 2))  # the sigmoid, without overflow
        return np.stack([spec * gate * (1 + 0.1 * s) for s in range(len(self.config.sources))], 1).astype(np.float32)


def _music(seconds=14.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    left = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(len(t))
    right = 0.2 * np.sin(2 * np.pi * 330 * t + 1) + 0.05 * rng.standard_normal(len(t))
    return np.stack([left, right], 1).astype(np.float32)


def test_the_default_order_fits_the_chunking(mdx_config):
    hop = mdx_config.hop_length
    order = default_order(hop, 2048)
    assert order[0] == Pass(shift=hop // 2, swap=True)  # the measured best second pass
    assert len(set(order)) == len(order) == 7
    assert all(p.shift < hop for p in order)  # sub-hop: another frame grid, never the same one again
    assert len({p.shift for p in order}) == 7  # every pass on a frame grid of its own
    # a short trim keeps only the shifts within it (their zeros stay inside the dropped edges)
    assert [p.shift for p in default_order(hop, hop // 4) if p.shift] == [hop // 4, hop // 8]
    with pytest.raises(ValueError, match="more than the chunking's trim"):
        check_passes([Pass(shift=4096)], 2048)
    with pytest.raises(ValueError):
        Pass(shift=-1)
    with pytest.raises(ValueError, match="shifts must be from 0 to 7"):
        Separator(IdentityBackend(mdx_config), shifts=8)


@pytest.mark.parametrize("augmentation", [Pass(shift=512), Pass(shift=2048), Pass(swap=True), Pass(flip=True),
                                          Pass(shift=256, swap=True, flip=True)], ids=lambda p: p.name)
def test_each_augmentation_is_undone_exactly(augmentation, mdx_config):
    """On the identity network an augmented pass gives back what the plain pass gives (to 1e-6)."""
    x = _music()
    plain = Separator(IdentityBackend(mdx_config)).separate(x, SR)
    both = Separator(IdentityBackend(mdx_config), shifts=1, passes=[augmentation]).separate(x, SR)
    for source in plain:
        assert np.abs(both[source] - plain[source]).max() < 1e-6
        assert np.abs(plain[source] - x).max() < 1e-5  # and the plain pass is the mixture itself


def test_passes_average_to_the_plain_and_undone_outputs(mdx_config):
    x = _music(seed=1)
    a, b = Pass(shift=mdx_config.hop_length // 2), Pass(swap=True, flip=True)

    def run(shifts, passes=(a,)):
        return Separator(Gated(mdx_config), shifts=shifts, passes=passes).separate(x, SR)["vocals"]

    y0, ya, yb, yab = run(0), run(1, [a]), run(1, [b]), run(2, [a, b])
    # each pass changes what the network computes (else this test could not fail) ...
    assert np.abs(ya - y0).max() > 1e-3 and np.abs(yb - y0).max() > 1e-3
    # ... and N passes are the mean of the plain one and each pass undone: ya = (y0 + ua) / 2, so
    # yab = (y0 + ua + ub) / 3 = (2 ya + 2 yb - y0) / 3
    np.testing.assert_allclose(yab, (2 * ya + 2 * yb - y0) / 3, atol=2e-6)


def test_without_a_deadline_every_window_gets_every_pass(tmp_path, mdx_config):
    import soundfile as sf

    x = _music(seconds=8.0)
    sf.write(tmp_path / "mix.wav", x, SR, subtype="FLOAT")
    sep = Separator(Gated(mdx_config), shifts=3)
    stems = {s: tmp_path / f"{s}.wav" for s in sep.sources}
    result = sep.separate_file(tmp_path / "mix.wav", stems)
    assert result.windows == {"exact+3": sep.plan(len(x)).n_windows}
    y, _ = sf.read(stems["drums"], dtype="float32")
    np.testing.assert_allclose(y, sep.separate(x, SR)["drums"], atol=1e-6)  # the file path averages alike
    assert "3 augmented passes at most" in sep.describe()


@pytest.mark.slow  # ~2 min: 30 minutes of audio, five passes per window
def test_memory_stays_flat_for_a_30_minute_song_with_four_passes(mdx_config):
    sep = Separator(IdentityBackend(mdx_config), shifts=4)
    peaks = {}
    for minutes in (3, 30):
        n = minutes * 60 * SR
        rng = np.random.default_rng(0)
        written = 0

        def read(a, b):  # generated on the fly: the song itself is never in memory
            return (0.1 * rng.standard_normal((2, b - a))).astype(np.float32)

        def write(block):
            nonlocal written
            written += block.shape[-1]

        tracemalloc.start()
        sep._separate_stream(read, n, SR, 2, write, sep._guard(None, "exact"))
        peaks[minutes] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        assert written == n
    assert peaks[30] < peaks[3] * 1.1 + 5 and peaks[30] < 200, peaks  # MB: flat in the song's length


def _song(guard, clock, n, true, noise, rng):
    """Run ``n`` windows on a simulated clock at ``true`` seconds per window of each path; the chosen names."""
    order = []
    for i in range(n):
        name = guard.choose(n - i)
        cost = (true[name] if name else 0.01) * rng.uniform(1 - noise, 1 + noise)
        clock.now += cost
        guard.observe(name, cost)
        order.append(name)
    return order


@pytest.mark.parametrize("setup_error", [0.0, 0.5])
def test_the_guard_spends_spare_budget_on_passes_and_is_never_late(setup_error):
    """Tiers exact+k cost (1 + k) exact windows. Budgets from less than the exact path needs to many times
    more: never late; every window exact (or better) whenever the exact pass fits; at least 80 % of the
    budget used whenever passes could use it; passes never bought while a window went without its exact pass."""
    exact, shifts, n, noise = 1.5, 4, 42, 0.1
    true = {f"exact+{k}": (1 + k) * exact for k in range(shifts, 0, -1)} | {"exact": exact}
    for budget, seed in itertools.product((30, 70, 100, 140, 200, 260, 330, 400, 450), range(3)):
        rng = np.random.default_rng(seed)
        clock = FakeClock()
        # setup's estimates are off together (the machine slower or faster than at setup) and by ±10 % each
        common = rng.uniform(1 - setup_error, 1 + setup_error)
        setup = {k: v * common * rng.uniform(0.9, 1.1) for k, v in true.items()}
        guard = DeadlineGuard(budget, setup, clock=clock, fill_cost=0.01, secure="exact",
                              scaled={f"exact+{k}": ("exact", 1 + k) for k in range(1, shifts + 1)})  # as Separator
        guard.reserve(0.3)
        order = _song(guard, clock, n, true, noise, rng)
        case = (budget, seed, guard.used)
        assert clock.now + 0.3 <= budget, case  # never late, the reserve kept
        if budget >= n * exact * 1.35:  # the exact pass fits every window, with the guard's margin
            assert None not in order, case  # so no window is filled ...
            # ... and passes are bought with what is left, unless (nearly) every window got every pass (the
            # guard times each tier once when it first plans it, which may cost a few windows a pass or more)
            if any(name != "exact" for name in order) and order.count(f"exact+{shifts}") < n - shifts:
                assert clock.now >= 0.8 * budget, case
        if budget >= n * (1 + shifts) * exact * 1.3:
            assert guard.used.get(f"exact+{shifts}", 0) >= n - shifts, case  # plenty: every window gets every pass
        if None in order:
            assert all(name in (None, "exact") for name in order), case  # no passes while some windows are filled


def test_predict_spends_passes_only_where_the_grader_runs(monkeypatch, capsys):
    import predict

    for name in ("LIGHTSAFT_SHIFTS", "AICROWD_IS_GRADING"):
        monkeypatch.delenv(name, raising=False)
    assert predict.shifts_setting(7) == 0  # trying the demo song stays quick
    monkeypatch.setenv("AICROWD_IS_GRADING", "true")
    assert predict.shifts_setting(7) == 7  # the grader: the whole budget, pass by pass
    monkeypatch.setenv("LIGHTSAFT_SHIFTS", "2")
    assert predict.shifts_setting(7) == 2
    monkeypatch.setenv("LIGHTSAFT_SHIFTS", "8")
    assert predict.shifts_setting(7) == 7  # more than the chunking offers: all it offers
    for bad in ("-1", "two", "1e9", "nan"):  # a bad tuning setting costs tuning, never the submission
        monkeypatch.setenv("LIGHTSAFT_SHIFTS", bad)
        capsys.readouterr()
        assert predict.shifts_setting(7) == 7  # the default while grading
        err = capsys.readouterr().err
        assert "warning: LIGHTSAFT_SHIFTS=" in err and "using the default" in err, err
    assert predict.describe_windows({"exact": 42}) == "exact"
    assert predict.describe_windows({"exact+3": 30, "exact+2": 12}) == "exact; augmented passes: 3 on 30 windows, 2 on 12 windows"
    assert predict.describe_windows({"exact+1": 1, "exact": 5}) == "exact; augmented passes: 1 on 1 window, none on 5"
    assert predict.describe_windows({"exact": 20, "fast": 3}) == "DEADLINE GUARD: exact 20, fast 3"


def _report_from(reference, estimates, bounds):
    """A one-song study report (training.augment_study's layout) built from given pass outputs."""
    from training.augment_study import gram

    G, Gw, energy = gram(reference, estimates, bounds)
    return {"sources": ["vocals"], "candidates": [f"c{k}" for k in range(1, len(estimates))],
            "songs": [{"windows": len(bounds), "gram": {"vocals": G.tolist()}, "gram_windows": {"vocals": Gw.tolist()},
                       "energy_windows": {"vocals": energy.tolist()}}]}  # fmt: skip


def test_the_study_scores_any_average_of_passes_exactly_from_its_gram_matrices():
    from lightsaft_infer.mdx import mdx_sdr
    from training.augment_study import sdr_of, sdr_per_window

    rng = np.random.default_rng(3)
    reference = rng.standard_normal((5000, 2)).astype(np.float32)
    estimates = [reference + s * rng.standard_normal((5000, 2)).astype(np.float32) for s in (0.5, 0.3, 0.8, 0.4)]
    bounds = [(0, 1200), (1200, 2400), (2400, 3600), (3600, 5000)]
    report = _report_from(reference, estimates, bounds)
    row = report["songs"][0]
    G, Gw, energy = np.array(row["gram"]["vocals"]), np.array(row["gram_windows"]["vocals"]), sum(row["energy_windows"]["vocals"])
    for subset in ([0], [0, 2], [0, 1, 3], [0, 1, 2, 3]):
        mean = sum(estimates[i] for i in subset) / len(subset)
        assert sdr_of(G, energy, subset) == pytest.approx(mdx_sdr(reference, mean), abs=1e-6)
    # windows with different passes (the guard's case): each window's own average, joined
    per = [[0, 1], [0], [0, 1, 2, 3], [0, 3]]
    joined = np.concatenate([sum(estimates[i][a:b] for i in p) / len(p) for (a, b), p in zip(bounds, per)])
    assert sdr_per_window(Gw, energy, per) == pytest.approx(mdx_sdr(reference, joined), abs=1e-6)


def test_the_study_orders_passes_by_what_they_add_to_those_before():
    from training.augment_study import choose_order, partial, score

    rng = np.random.default_rng(4)
    reference = rng.standard_normal((8000, 2)).astype(np.float32)
    noise = [rng.standard_normal((8000, 2)).astype(np.float32) for _ in range(3)]
    plain = reference + 0.5 * noise[0]
    estimates = [plain,
                 reference + 0.5 * (0.95 * noise[0] + 0.3 * noise[1]),  # alone better than c3, but like the plain pass
                 reference + 0.5 * noise[1],  # independent of the plain pass: the most gain at first
                 reference + 0.5 * (0.6 * noise[0] + 0.8 * noise[2])]  # fmt: skip
    report = _report_from(reference, estimates, [(0, 4000), (4000, 8000)])
    assert choose_order(report) == [2, 3, 1]
    assert score(report, [0, 2])["gain"] > score(report, [0, 3])["gain"] > score(report, [0, 1])["gain"] > 0
    reach = partial(report, [2], fractions=(0.0, 0.5, 1.0))
    assert reach[0.0] == 0 and 0 < reach[0.5] < reach[1.0] == pytest.approx(score(report, [0, 2])["gain"])


@pytest.mark.parametrize("budget", [33, 45, 60])
def test_a_short_song_prices_every_number_of_passes_from_its_exact_windows(budget):
    """A round-2 song of four windows (1.57 × 21 s = 33 s for ~1.75 s windows): the passes share the exact
    pass's measured cost, so the guard does not wait for each tier's own first window at twice its setup
    estimate (with an estimate per tier it used 59-69 % of these budgets) and uses 80 % of it. (A budget of
    25 s is used to 79 %: one window's last pass at its pessimistic cost is then 7 % of the budget.)"""
    exact, shifts, n = 1.75, 7, 4
    true = {f"exact+{k}": (1 + k) * exact for k in range(shifts, 0, -1)} | {"exact": exact}
    for seed in range(5):
        rng = np.random.default_rng(seed)
        clock = FakeClock()
        guard = DeadlineGuard(budget, {k: v * rng.uniform(0.9, 1.1) for k, v in true.items()}, clock=clock,
                              fill_cost=0.01, secure="exact",
                              scaled={f"exact+{k}": ("exact", 1 + k) for k in range(1, shifts + 1)})  # fmt: skip
        guard.reserve(1.0)
        order = _song(guard, clock, n, true, 0.1, rng)
        assert None not in order and clock.now + 1.0 <= budget, (seed, order)
        if order.count(f"exact+{shifts}") < n - 1:  # unless (nearly) every window got every pass
            assert clock.now >= 0.8 * budget, (seed, clock.now, order)
    with pytest.raises(ValueError, match="must both be paths"):
        DeadlineGuard(10, {"exact": 1.0}, scaled={"exact+1": ("exact", 2)})
