"""Setting a separator up for a grader that must never fail: engines tried in turn, tuning settings that
cost only tuning, the fast path and augmented passes by measurement. ``predict.py`` (MDX 2021) and the MDX'23
model of ``lightsaft-infer submission`` both call :func:`prepare`.

Settings come from ``LIGHTSAFT_*`` variables (``LIGHTSAFT_BACKEND``, ``LIGHTSAFT_FAST``, ``LIGHTSAFT_MODE``,
``LIGHTSAFT_OVERLAP``, ``LIGHTSAFT_TRIM``, ``LIGHTSAFT_POSTFILTER``, ``LIGHTSAFT_ITERATIONS``,
``LIGHTSAFT_SHIFTS``, ``LIGHTSAFT_NUM_THREADS``); each is checked on its own, and an unusable value is a
warning and the default.
"""

from __future__ import annotations

import os
import sys

from .backends import BACKENDS, EXACT_BACKENDS, default_fast_backend, default_weights, module_available, open_backend
from .chunking import DEFAULT_OVERLAP
from .errors import LightsaftError
from .mdx import ROUND2_FACTOR, per_song_timeout
from .separator import Separator

#: Kept free before the harness's alarm: the harness's own work around the call, and process jitter.
#: The guard keeps its own time for the final writes and plans every window against the real clock.
RESERVE_S, RESERVE_FRACTION = 1.0, 0.02
#: ``LIGHTSAFT_FAST=auto`` loads the fast path when the exact one could miss the budget of a song this long (s).
LONG_SONG_S = 600.0
FAST_BACKENDS = tuple(b for b in BACKENDS if b not in EXACT_BACKENDS)


def setting(name: str, parse, default, warnings: list):
    """``$name`` parsed by ``parse``, or ``default`` (unset, or unusable: a bad tuning setting costs tuning, never
    the submission; the warning says so)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return parse(raw.strip())
    except (ValueError, TypeError) as err:
        warnings.append(f"{name}={raw!r:.60} is not usable ({err}); using the default, {default!r}")
        return default


def choice(*allowed):
    def parse(value):
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return value

    return parse


def number(kind, low, high):
    def parse(value):
        x = kind(value)
        if not (low <= x <= high):  # also refuses NaN
            raise ValueError(f"expected {low} to {high}")
        return x

    return parse


def tuning(warnings: list) -> dict:
    """Every ``LIGHTSAFT_*`` setting of predict.py, each checked on its own."""
    from lightsaft_infer.chunking import MODES
    from lightsaft_infer.postfilter import POSTFILTERS
    from lightsaft_infer.threads import cpu_threads, granted

    threads = setting("LIGHTSAFT_NUM_THREADS", lambda v: cpu_threads(int(v)), None, warnings)
    raw_threads = os.environ.get("LIGHTSAFT_NUM_THREADS", "").strip()
    if threads is not None and raw_threads.isdigit() and int(raw_threads) > threads:
        warnings.append(f"LIGHTSAFT_NUM_THREADS={raw_threads} capped at the {granted()} threads this process is granted")
    return {
        "backend": setting("LIGHTSAFT_BACKEND", choice("auto", *EXACT_BACKENDS, *FAST_BACKENDS), "auto", warnings),
        "fast": setting("LIGHTSAFT_FAST", choice("auto", "none", *FAST_BACKENDS), "auto", warnings),
        "mode": setting("LIGHTSAFT_MODE", choice(*MODES), "overlap", warnings),
        "overlap": setting("LIGHTSAFT_OVERLAP", number(float, 0.0, 0.9), DEFAULT_OVERLAP, warnings),
        "trim": setting("LIGHTSAFT_TRIM", number(int, 0, 1 << 20), None, warnings),
        "postfilter": setting("LIGHTSAFT_POSTFILTER", choice(*POSTFILTERS), "none", warnings),
        "iterations": setting("LIGHTSAFT_ITERATIONS", number(int, 1, 10), 1, warnings),
        "shifts": setting("LIGHTSAFT_SHIFTS", lambda v: v if v == "auto" else number(int, 0, 64)(v),
                          "auto" if os.environ.get("AICROWD_IS_GRADING") else 0, warnings),
        "threads": threads,
    }


def fast_backend(exact: str, weights=None, choice: str | None = None) -> str | None:
    """The fast path the guard may use: ``choice`` (default ``$LIGHTSAFT_FAST``: ``none``, a backend name, or ``auto``).

    ``auto`` takes ``openvino-int8`` where OpenVINO is installed and the weights have their int8
    model (``NAME.int8.xml``: about 2.8x the exact path on the 2-core EPYC, -0.163 dB mean MDX SDR), else
    ``openvino-bf16`` on a CPU that computes in bfloat16 (1.5x), else ``torch-bf16`` behind the
    torch backend (no faster than ONNX Runtime's fp32 on that CPU, so never behind it).
    """
    choice = choice or os.environ.get("LIGHTSAFT_FAST", "auto")
    if choice == "none" or exact in FAST_BACKENDS:
        return None
    if choice != "auto":
        return choice
    return default_fast_backend(weights, exact)


def fast_needed(separator: Separator, choice: str | None = None, deadline_for=None) -> bool:
    """Whether the exact path, at the speed measured at setup, would miss the budget of a ``LONG_SONG_S`` song.

    Compiling a fast path costs 3-8 s of setup, so ``auto`` loads it only where it may be needed
    (``LIGHTSAFT_FAST`` naming a backend always loads it). No safety factor here: the setup
    measurement is already pessimistic (its one window pays first-call costs: 1.75-1.86 s against
    ~1.5 s per window in whole songs, 2026-11-22), and during a song the guard keeps its own margin.
    """
    return (choice or os.environ.get("LIGHTSAFT_FAST", "auto")) != "auto" or exact_could_miss(separator, deadline_for)


def shifts_setting(limit: int, value=None) -> int:
    """The most augmented passes, at most ``limit`` (what the chunking offers): ``auto`` is ``limit``; unset,
    ``auto`` while grading (spare budget is spent on accuracy) and 0 otherwise. A number above ``limit`` is
    ``limit``."""
    if value is None:
        warnings = []
        value = tuning(warnings)["shifts"]
        for line in warnings:
            print(f"lightsaft-infer: warning: {line}", file=sys.stderr, flush=True)
    return limit if value == "auto" else min(int(value), limit)


class NoNetwork:
    """Stands in for the network when no backend can load these weights here: the separator then only fills
    (the mixture divided among the stems), so that every song still gets four valid stems."""

    name = "none"

    def __init__(self, config, reason: str):
        self.config, self.reason = config, reason

    def __call__(self, spec):
        raise LightsaftError(None, f"no backend could load the model ({self.reason})")


def model_config(weights):
    """The weights' configuration, read without compiling anything (the safetensors header or the ONNX
    metadata): what setup needs to know the model when no backend can run it."""
    import pathlib

    from lightsaft_infer.backends import named_weights
    from lightsaft_infer.export import read_onnx_config
    from lightsaft_infer.weights import read_config

    from lightsaft_infer.errors import WeightFileError

    path = pathlib.Path(named_weights(weights) if weights else default_weights())
    st, ox = path.with_suffix(".safetensors"), path.with_suffix(".onnx")
    if not path.is_file():
        raise WeightFileError(path, "no such weight file")
    return read_config(st) if st.is_file() else read_onnx_config(ox)


def exact_candidates(backend: str, weights) -> list:
    """The exact backends to try in order: the one asked for (``auto``: as the CLI resolves it), then the others
    this machine has, so that an engine that cannot load here costs its speed, not the submission."""
    order = [] if backend == "auto" else [backend]
    order += ["onnx", "openvino", "torch"]
    available = {"onnx": True, "openvino": module_available("openvino"), "torch": module_available("torch")}
    return [b for i, b in enumerate(order) if b not in order[:i] and (available.get(b, True) or b == backend)]


def load_separator(weights, settings: dict, notes: list) -> Separator:
    """The exact path for ``weights``, falling back from backend to backend (each failure one note); a
    fill-only separator when none loads. Weights that cannot be read at all stop setup (one line)."""
    config = model_config(weights)  # unusable weights: WeightFileError, the caller's one line
    options = {k: settings[k] for k in ("mode", "overlap", "trim", "postfilter", "iterations")}
    failures = []
    for backend in exact_candidates(settings["backend"], weights):
        try:
            try:
                separator = Separator.from_file(weights, backend=backend, threads=settings["threads"], **options)
            except ValueError as err:  # settings this model's chunking refuses: tuning, not the submission
                notes.append(f"warning: {err}; using the default chunking and post-filter")
                options = {"mode": "overlap", "overlap": DEFAULT_OVERLAP, "trim": None, "postfilter": "none",
                           "iterations": 1}  # fmt: skip
                separator = Separator.from_file(weights, backend=backend, threads=settings["threads"], **options)
            separator.calibrate()  # warm-up, and the speed the deadline guard starts from
            if failures:
                notes.append("exact path fell back: " + "; ".join(failures))
            return separator
        except Exception as err:  # any engine's own error: the next one
            failures.append(f"{backend} cannot run here ({' '.join(str(err).split())[:200]})")
    reason = "; ".join(failures)
    notes.append(f"WARNING: no backend could load the model ({reason}); every song gets the mixture divided "
                 "among the stems")
    return Separator(NoNetwork(config, reason))


def exact_could_miss(separator: Separator, deadline_for=None) -> bool:
    """Whether the exact path, at its measured speed, would miss the budget of a ``LONG_SONG_S`` song
    (``deadline_for(start, duration) -> (deadline, budget)``: the challenge's; default MDX 2021's)."""
    windows = separator.plan(int(LONG_SONG_S * separator.sample_rate)).n_windows
    deadline, _ = (deadline_for or song_deadline)(0.0, LONG_SONG_S)
    return windows * separator.costs["exact"] > deadline


def choose_exact(separator: Separator, weights, backend: str, deadline_for=None) -> str | None:
    """With ``LIGHTSAFT_BACKEND=auto`` while the grader runs (``AICROWD_IS_GRADING``; compiling a second engine
    costs ~8 s of setup that trying the demo song should not pay), where the exact path's speed matters
    (:func:`exact_could_miss`), time
    OpenVINO fp32 against ONNX Runtime on a warm window and keep the faster: both are exact (within 1e-5 of
    the authors' outputs) and which wins depends on the CPU and the network (on the 2-core AVX2 EPYC,
    2026-12-04: OpenVINO 9-15 % faster for the MDX LightSAFT, v2 light and medium, ONNX Runtime 10-26 % for
    LightSAFT-Net+ and v2 large). Returns the setup line's note, or None when nothing was timed."""
    if backend != "auto" or separator.backend.name != "onnx" or not module_available("openvino"):
        return None
    if not os.environ.get("AICROWD_IS_GRADING"):
        return None
    if not exact_could_miss(separator, deadline_for):
        return None
    timed = separator.choose_exact([open_backend(weights, "openvino")])
    return "exact path by measurement: " + ", ".join(f"{k} {v:.2f} s/window" for k, v in timed.items())


def song_deadline(start: float, duration: float) -> tuple[float, float]:
    """``(deadline, budget)``: the per-song timeout (and the round-2 rule if asked) less the reserve."""
    budget = per_song_timeout()
    if os.environ.get("LIGHTSAFT_ROUND2") == "1" and duration > 0:
        budget = min(budget, ROUND2_FACTOR * duration)
    return start + budget - max(RESERVE_S, RESERVE_FRACTION * budget), budget


def fast_unavailable_reason(exact: str, choice: str | None = None) -> str | None:
    """Why ``LIGHTSAFT_FAST=auto`` found no fast path, for the setup line (None when it found one)."""
    if (choice or os.environ.get("LIGHTSAFT_FAST", "auto")) == "none" or exact in FAST_BACKENDS:
        return None
    if not module_available("openvino"):
        return "no fast path: OpenVINO is not installed (pip install 'lightsaft-infer[openvino]')"
    return "no fast path for these weights on this CPU"


def prepare(weights=None, settings: dict | None = None, deadline_for=None, notes: list | None = None):
    """A separator ready to grade: the exact engine that loads (:func:`load_separator`), warmed and timed; the
    faster exact engine by measurement while grading; the fast path where the exact one could miss a
    ``LONG_SONG_S`` song's budget (``deadline_for``: the challenge's budget rule); augmented passes as
    ``LIGHTSAFT_SHIFTS`` says. Never raises for an engine: only for weights that cannot be read. Returns
    ``(separator, setup notes)``."""
    notes = [] if notes is None else notes
    if settings is None:
        warnings = []
        settings = tuning(warnings)
        notes += [f"warning: {w}" for w in warnings]
    separator = load_separator(weights, settings, notes)
    chosen = note = None
    if not isinstance(separator.backend, NoNetwork):
        separator.shifts = shifts_setting(len(separator.augmentations), settings["shifts"])
        try:
            chosen = choose_exact(separator, weights, settings["backend"], deadline_for)
        except Exception as err:  # the other engine cannot run here: keep the one that does
            chosen = f"openvino not timed: it cannot run here ({' '.join(str(err).split())[:200]})"
        fast = fast_backend(separator.backend.name, weights, settings["fast"])
        note = None if fast else fast_unavailable_reason(separator.backend.name, settings["fast"])
        if fast and fast_needed(separator, settings["fast"], deadline_for):
            try:
                separator.add_fast(open_backend(weights, fast, settings["threads"]))
                separator.calibrate(["fast"])
                if separator.drop_slower_paths():  # chosen by measurement: never a slower "fast" path
                    note = f"{fast} not used: measured no faster than the exact path on this CPU"
            except Exception as err:  # a fast path that cannot run costs speed, never the run
                separator.paths.pop("fast", None)
                separator.costs.pop("fast", None)
                note = f"no fast path: {fast} cannot run here ({' '.join(str(err).split())[:200]})"
        elif fast:
            note = f"{fast} not loaded: the exact path fits a {LONG_SONG_S / 60:.0f}-minute song's budget"
    return separator, [n for n in (chosen, note) if n] + notes
