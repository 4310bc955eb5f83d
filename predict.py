"""Music Demixing Challenge entry point: ``python predict.py``.

The grader replaces ``evaluator/`` with its own harness; when it is absent we
use ``lightsaft_infer.mdx``, which behaves the same way. Configuration by
environment: ``LIGHTSAFT_WEIGHTS`` (a ``.safetensors`` or ``.onnx`` file;
default ``weights/default.safetensors``), ``LIGHTSAFT_BACKEND``
(``auto``/``torch``/``onnx``), ``LIGHTSAFT_MODE`` (``overlap``/``authors``),
``LIGHTSAFT_OVERLAP``, ``LIGHTSAFT_TRIM``, ``LIGHTSAFT_NUM_THREADS``, ``LIGHTSAFT_POSTFILTER`` and
``LIGHTSAFT_ITERATIONS`` (see ``lightsaft_infer.postfilter``); ``LIGHTSAFT_FAST`` names the
fast backend the deadline guard may fall back to (``auto``: ``openvino-int8``
where OpenVINO and the weights' int8 model are there, else ``openvino-bf16`` on
a bfloat16 CPU, else ``torch-bf16`` behind the torch backend, loaded only if the
exact path measured at setup could miss the budget of a 10-minute song;
``none``: no fast path); ``LIGHTSAFT_ROUND2=1`` also
applies the round-2 limit (1.57 × the song's duration). ``LIGHTSAFT_SHIFTS``: the most augmented passes
(sub-hop time shifts, some with channel swap or sign flip; see ``lightsaft_infer.augment``) the guard may add to a
window once every window's exact pass is secured; ``auto`` = all of them, the default where the grader runs
(``AICROWD_IS_GRADING`` set), ``0`` elsewhere, so that trying the demo song stays quick.

Deadline guard: each song's budget is the harness's per-song timeout
(``INFERENCE_PER_MUSIC_TIMEOUT_SECONDS``, and the round-2 rule when asked),
less a small reserve. Setup measures every path's seconds per window; while a
song is separated, the exact path takes as many windows as the budget allows,
the fast path the windows after them, and the mixture divided among the stems
fills only what no network path can finish (see ``lightsaft_infer.deadline``).

Every song is its own job: a song whose mixture cannot be used is reported in
one line and, where its length is known, gets four silent stems of that length
(so the harness's verification passes); the other songs are separated, and
the run exits non-zero at the end. SIGTERM (``docker stop``) ends the run
without leaving partial stems behind.
"""

import os
import signal
import sys
import time


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

try:
    from evaluator.music_demixing import MusicDemixingPredictor
except ImportError:
    from lightsaft_infer.mdx import MusicDemixingPredictor

from lightsaft_infer.chunking import DEFAULT_OVERLAP
from lightsaft_infer.audio import audio_info, write_silence
from lightsaft_infer.backends import (BACKENDS, EXACT_BACKENDS, default_fast_backend, default_weights,
                                      module_available, open_backend)
from lightsaft_infer.errors import LightsaftError
from lightsaft_infer.files import check_writable as writable
from lightsaft_infer.mdx import ROUND2_FACTOR, per_song_timeout
from lightsaft_infer.separator import Separator, untier
from lightsaft_infer.signals import leave

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


def fast_needed(separator: Separator, choice: str | None = None) -> bool:
    """Whether the exact path, at the speed measured at setup, would miss the budget of a ``LONG_SONG_S`` song.

    Compiling a fast path costs 3-8 s of setup, so ``auto`` loads it only where it may be needed
    (``LIGHTSAFT_FAST`` naming a backend always loads it). No safety factor here: the setup
    measurement is already pessimistic (its one window pays first-call costs: 1.75-1.86 s against
    ~1.5 s per window in whole songs, 2026-11-22), and during a song the guard keeps its own margin.
    """
    return (choice or os.environ.get("LIGHTSAFT_FAST", "auto")) != "auto" or exact_could_miss(separator)


def shifts_setting(limit: int, value=None) -> int:
    """The most augmented passes, at most ``limit`` (what the chunking offers): ``auto`` is ``limit``; unset,
    ``auto`` while grading (spare budget is spent on accuracy) and 0 otherwise. A number above ``limit`` is
    ``limit``."""
    if value is None:
        warnings = []
        value = tuning(warnings)["shifts"]
        for line in warnings:
            print(f"predict.py: warning: {line}", file=sys.stderr, flush=True)
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


def describe_windows(windows: dict) -> str:
    """The per-song line's account of the windows: ``exact``, the augmented passes they got, or the guard's
    fallbacks (``DEADLINE GUARD: exact 30, fast 12``)."""
    passes = {}
    for name, count in windows.items():
        path, extra = untier(name)
        if path != "exact":
            return "DEADLINE GUARD: " + ", ".join(f"{k} {v}" for k, v in windows.items())
        passes[extra] = passes.get(extra, 0) + count
    if set(passes) <= {0}:
        return "exact"
    return "exact; augmented passes: " + ", ".join(f"{k} on {v} window{'s' * (v != 1)}" if k else f"none on {v}"
                                                   for k, v in sorted(passes.items(), reverse=True))


def exact_could_miss(separator: Separator) -> bool:
    """Whether the exact path, at its measured speed, would miss the budget of a ``LONG_SONG_S`` song."""
    windows = separator.plan(int(LONG_SONG_S * separator.sample_rate)).n_windows
    deadline, _ = song_deadline(0.0, LONG_SONG_S)
    return windows * separator.costs["exact"] > deadline


def choose_exact(separator: Separator, weights, backend: str) -> str | None:
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
    if not exact_could_miss(separator):
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


def check_writable(folder) -> None:
    """Refuse at once, in one line, a results folder this user cannot write (not after setup and a song)."""
    try:
        writable(folder)
    except OSError as err:
        raise SystemExit(f"predict.py: error: {folder}: cannot be written ({err.strerror or err}); "
                         "the results folder must be writable by this user") from None


def _terminate(signum, frame):
    # SIGTERM (docker stop, job schedulers) unwinds like Ctrl-C: stems being written are deleted.
    raise SystemExit(128 + signum)


class LightSAFTPredictor(MusicDemixingPredictor):
    def prediction_setup(self):
        start = time.perf_counter()
        check_writable(getattr(self, "results_data_path", None) or os.path.join(os.getcwd(), "data", "results"))
        self.failed = {}
        warnings, notes = [], []
        settings = tuning(warnings)
        for line in warnings:
            print(f"predict.py: warning: {line}", file=sys.stderr, flush=True)
        weights = os.environ.get("LIGHTSAFT_WEIGHTS") or None
        chosen = note = None
        try:
            self.separator = load_separator(weights, settings, notes)
        except (LightsaftError, ValueError) as err:  # the weights themselves: nothing to separate with
            raise SystemExit(f"predict.py: error: {err}") from None
        self.no_network = isinstance(self.separator.backend, NoNetwork)
        if not self.no_network:
            self.separator.shifts = shifts_setting(len(self.separator.augmentations), settings["shifts"])
            try:
                chosen = choose_exact(self.separator, weights, settings["backend"])
            except Exception as err:  # the other engine cannot run here: keep the one that does
                chosen = f"openvino not timed: it cannot run here ({' '.join(str(err).split())[:200]})"
            fast = fast_backend(self.separator.backend.name, weights, settings["fast"])
            note = None if fast else fast_unavailable_reason(self.separator.backend.name, settings["fast"])
            if fast and fast_needed(self.separator, settings["fast"]):
                try:
                    self.separator.add_fast(open_backend(weights, fast, settings["threads"]))
                    self.separator.calibrate(["fast"])
                    if self.separator.drop_slower_paths():  # chosen by measurement: never a slower "fast" path
                        note = f"{fast} not used: measured no faster than the exact path on this CPU"
                except Exception as err:  # a fast path that cannot run costs speed, never the run
                    self.separator.paths.pop("fast", None)
                    self.separator.costs.pop("fast", None)
                    note = f"no fast path: {fast} cannot run here ({' '.join(str(err).split())[:200]})"
            elif fast:
                note = f"{fast} not loaded: the exact path fits a {LONG_SONG_S / 60:.0f}-minute song's budget"
        costs = self.separator.costs
        speeds = ", ".join(f"{k} {v:.2f} s/window" for k, v in costs.items())
        extra = "".join(f"; {n}" for n in (chosen, note, *notes) if n)
        print(f"setup: {self.separator.describe()} loaded and warmed up in {time.perf_counter() - start:.1f} s "
              f"({speeds}){extra}", flush=True)

    def prediction(self, mixture_file_path, bass_file_path, drums_file_path, other_file_path, vocals_file_path):
        start = time.perf_counter()
        paths = {"bass": bass_file_path, "drums": drums_file_path, "other": other_file_path, "vocals": vocals_file_path}
        song = os.path.basename(os.path.dirname(mixture_file_path))
        try:
            info = audio_info(mixture_file_path)  # never opens a FIFO
        except Exception:  # the separator reports the file's problem in one line
            info = None
        deadline, budget = song_deadline(start, info.duration if info else 0.0)
        if getattr(self, "no_network", False):  # set by prediction_setup
            try:
                self.separator.fill_file(mixture_file_path, paths)
            except Exception as err:
                self._failed(song, err, paths, info)
                return
            print(f"{song}: {time.perf_counter() - start:.1f} s; budget {budget:.0f} s; FILLED: no backend could "
                  "load the model (see setup)", flush=True)
            return
        try:
            result = self.separator.separate_file(mixture_file_path, paths, deadline=deadline)
        except Exception as err:  # one song's failure is that song's, never the run's
            if type(err).__name__ == "TimeoutException":  # the machine stalled past what the guard could see
                self._timed_out(song, start, mixture_file_path, paths, info)
            else:
                self._failed(song, err, paths, info)
            return
        for warning in result.warnings:
            print(f"predict.py: warning: {warning}", file=sys.stderr, flush=True)
        wall = time.perf_counter() - start
        print(
            f"{song}: {result.duration:.1f} s of audio in "
            f"{wall:.1f} s (RTF {wall / max(result.duration, 1e-9):.2f}); budget {budget:.0f} s: margin "
            f"{budget - wall:.1f} s; {describe_windows(result.windows)} "
            f"({sum(result.windows.values())} windows)",
            flush=True,
        )

    def _timed_out(self, song, start, mixture, paths, info) -> None:
        """The harness's alarm fired inside a window (a stall no estimate could foresee): the song still gets
        four stems (the mixture divided among them, no network) and the run goes on with the next song."""
        try:
            self.separator.fill_file(mixture, paths)
        except Exception as err:
            self._failed(song, err, paths, info)
            return
        self.failed[song] = "timed out"
        print(f"predict.py: error: {song}: the harness's per-song alarm fired after {time.perf_counter() - start:.1f} s; "
              "wrote the mixture divided among the stems so that the other songs are still scored",
              file=sys.stderr, flush=True)  # fmt: skip

    def _failed(self, song, err, paths, info) -> None:
        """Report a song that could not be separated; give it silent stems where its length is known."""
        message = str(err) if isinstance(err, LightsaftError) else f"{type(err).__name__}: {' '.join(str(err).split())}"
        written = ""
        if info is not None and info.frames > 0:
            try:
                write_silence(paths.values(), info.frames, info.samplerate, info.channels)
                written = f"; wrote silent stems ({info.frames} samples) so that the other songs are still scored"
            except Exception as write_err:  # e.g. a full disk: say so, and go on with the next song
                written = f"; could not write silent stems either ({write_err})"
        if not written.startswith("; wrote"):  # the harness made the song's folder: leave no empty one behind
            try:
                os.rmdir(os.path.dirname(paths["vocals"]))
            except OSError:
                pass
        self.failed[song] = message
        print(f"predict.py: error: {song}: {message}{written}", file=sys.stderr, flush=True)

    def run(self):
        signal.signal(signal.SIGTERM, _terminate)
        problem = None
        try:
            super().run()
        except Exception as err:  # the harness's verification or alarm: one line, not a traceback
            problem = " ".join(str(err).split())
        failed = getattr(self, "failed", {})
        if failed:
            print(f"predict.py: {len(failed)} song{'s' * (len(failed) != 1)} failed: {', '.join(failed)}",
                  file=sys.stderr, flush=True)  # fmt: skip
        if problem:
            print(f"predict.py: error: {problem}", file=sys.stderr, flush=True)
        if failed or problem:
            sys.exit(1)


if __name__ == "__main__":
    try:
        predictor = LightSAFTPredictor()
    except ValueError as err:  # e.g. a time limit that is not a number
        raise SystemExit(f"predict.py: error: {err}") from None
    try:
        predictor.run()
    except SystemExit as stop:  # SIGTERM: the stems being written are gone; a window may still be running
        leave(stop.code if isinstance(stop.code, int) else 1)
        raise
