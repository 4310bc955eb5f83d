"""The public entry: :class:`Separator` — one song in, four stems out.

Used alike by the CLI, ``predict.py`` and the benchmark::

    sep = Separator.from_file("weights/default.safetensors", backend="onnx")
    stems = sep.separate(audio, 44100)   # {"vocals": (samples, channels), ...}

Per window the STFT is computed once, the backend runs all sources from it in
one batch, and the iSTFT outputs are cross-faded into the track (see
:mod:`.chunking`). ``separate_file`` streams: the mixture is read window by
window and finished stem samples are written as they come, so memory does not
grow with the song. With a ``deadline`` a :class:`~.deadline.DeadlineGuard`
picks, window by window, the exact path, the fast path (``fast=``), or a
cheap fill, so that the stems are always written in time.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import numpy as np

from .audio import AudioReader, StemWriter, check_audio, check_space
from .backends import Backend, open_backend
from .chunking import DEFAULT_OVERLAP, OverlapAdd, describe_plan, plan_for, window_batches
from .deadline import DeadlineGuard
from .resample import MAX_RATE, MIN_RATE, ResampledReader, ResampledWriter
from .signals import interruptible
from .threads import cpu_threads
from .errors import BackendFailed, LightsaftError, WeightFileError
from . import augment
from . import postfilter as postfilters
from .stft import STFT


#: Seconds kept for closing and renaming the stem files after the last window: closing four float stems of
#: 100 s took 0.08-0.24 s on 2 cores that a training run kept busy (each close flushes and rewrites a header).
COMMIT_S = 0.4
#: Seconds kept for the converter's last block when the song is not at the model's rate.
FLUSH_S = 0.1
#: Samples per block when a song is only filled.
FILL_BLOCK = 1 << 18


class Separator:
    """Separates songs with one backend.

    ``mode`` is ``"overlap"`` (``trim`` samples of context dropped per window
    edge, ``overlap`` fraction cross-faded; default trim 2048, no cross-fade:
    see :mod:`.chunking`) or ``"authors"`` (the network's own code base's chunking: v1 trim
    8192 with no cross-fade; LaSAFT-Net-v2 trim 5120 with windows overlapping by half, summed
    at weight 0.5). ``batch_size`` windows go through
    the network at once (each carries all sources). ``fast`` is an optional
    second, faster backend for the same weights that a deadline may fall back to.
    """

    def __init__(
        self, backend: Backend, mode: str = "overlap", overlap: float = DEFAULT_OVERLAP, trim: int | None = None,
        batch_size: int = 1, threads: int | None = None, fast: Backend | None = None, postfilter: str = "none",
        iterations: int = 1, shifts: int = 0, passes=None,
    ):  # fmt: skip
        self.backend, self.config = backend, backend.config
        #: Separation paths, most accurate first; ``costs`` (seconds per window) is filled by :meth:`calibrate`.
        self.paths = {"exact": backend}
        self.costs: dict = {}
        if fast is not None:
            self.add_fast(fast)
        self.mode, self.overlap, self.trim = mode, overlap, trim
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.batch_size = batch_size
        postfilters.check(postfilter, iterations)  # see .postfilter: none keeps the authors' output
        self.postfilter, self.iterations = postfilter, int(iterations)
        self.stft = STFT(self.config.n_fft, self.config.hop_length, workers=cpu_threads(threads) if threads else 1)
        trim = self.plan(0).trim  # validates the chunking now
        #: Augmented passes (:mod:`.augment`) in the order they are added; ``shifts`` of them are averaged with
        #: the plain pass on the exact path (without a deadline), or at most that many as the budget allows.
        self.augmentations = augment.check_passes(
            augment.default_order(self.config.hop_length, trim) if passes is None else passes, trim)
        if not 0 <= int(shifts) <= len(self.augmentations):
            raise ValueError(f"shifts must be from 0 to {len(self.augmentations)} with this chunking, not {shifts}")
        self.shifts = int(shifts)

    def add_fast(self, fast: Backend) -> None:
        """Give the deadline guard a faster (less exact) path for the same model; :meth:`calibrate` again after."""
        if fast.config != self.config:
            raise ValueError("the fast backend must hold the same model as the exact one")
        self.paths["fast"] = fast
        self.costs.pop("fast", None)

    def drop_slower_paths(self) -> list:
        """Remove every path that :meth:`calibrate` measured no faster than a more accurate one (a "fast"
        path that is slower on this CPU only costs accuracy); returns the names removed."""
        missing = [name for name in self.paths if name not in self.costs]
        if missing:
            self.calibrate(missing)
        dropped = [name for name in list(self.paths)[1:] if self.costs[name] >= self.costs["exact"]]
        for name in dropped:
            del self.paths[name]
            self.costs.pop(name, None)
        return dropped

    def choose_exact(self, candidates) -> dict:
        """Keep as the exact path whichever of the current exact backend and ``candidates`` (other exact
        backends of the same model: ONNX Runtime and OpenVINO fp32 agree within 1e-5, and which is faster
        depends on the CPU and the network) runs a warm window fastest. Returns ``{name: seconds}`` measured;
        ``costs["exact"]`` becomes the winner's."""
        windows = self._probe_windows()
        backends, timed = [self.backend, *candidates], []
        try:
            for backend in backends:
                if backend.config != self.config:
                    raise ValueError("an exact candidate must hold the same model as the exact path")
                self.paths["exact"] = backend
                self._run_batch("exact", windows)  # warm: first-call costs are not what a song pays
                t = time.perf_counter()
                self._run_batch("exact", windows)
                timed.append((time.perf_counter() - t) / self.batch_size)
        finally:
            self.paths["exact"] = self.backend  # unchanged unless every candidate was timed
        k = int(np.argmin(timed))
        self.backend = self.paths["exact"] = backends[k]
        self.costs["exact"] = timed[k]
        return {b.name: t for b, t in zip(backends, timed)}

    @classmethod
    def from_file(cls, path=None, backend: str = "auto", threads: int | None = None, fast: str | None = None,
                  **options) -> "Separator":
        """Load ``path`` (``.safetensors`` / ``.onnx``; default model when None) on ``backend``;
        ``fast`` names a second backend (e.g. ``"openvino-bf16"``) for deadline fallback."""
        fast_backend = open_backend(path, fast, threads) if fast else None
        return cls(open_backend(path, backend, threads), threads=threads, fast=fast_backend, **options)

    @classmethod
    def from_pretrained(cls, name: str, pull: bool = True, progress: bool = False, **options) -> "Separator":
        """One of the authors' networks by its catalogue name (``lightsaft-infer models``), pulled into the
        cache and verified on first use unless ``pull`` is False; ``options`` as for :meth:`from_file`."""
        from .models import resolve

        return cls.from_file(resolve(name, pull_missing=pull, progress=progress), **options)

    @property
    def sources(self) -> tuple:
        return self.config.sources

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def describe(self) -> str:
        c = self.config
        plan = self.plan(0)
        chunking = (("the v1 code's chunking: " if plan.scheme != "authors-v2" else "") + describe_plan(plan)
                    if self.mode == "authors" else f"trim {plan.trim}" + (f", overlap {self.overlap:g}" if plan.fade else ""))
        filtered = "" if self.postfilter == "none" else f", {self.postfilter} post-filter" + (
            f" ({self.iterations} iteration{'s' * (self.iterations != 1)})" if self.postfilter == "wiener" else "")
        passes = f", {self.shifts} augmented pass{'es' * (self.shifts != 1)} at most" if self.shifts else ""
        return (f"{c.title} (n_fft {c.n_fft}, {c.n_blocks} blocks, "
                f"{c.internal_channels} channels) on {self.backend.name}, {chunking}{filtered}{passes}")

    def warm_up(self) -> None:
        """Run one silent window so that first-call costs (kernel selection, allocation) are paid at setup."""
        frames = self.config.num_frame
        self.backend(np.zeros((1, 4, frames, self.config.n_bins), np.float32))

    def calibrate(self, names=None) -> dict:
        """Warm every path (or those ``names``) up and take its time per window (STFT, network, iSTFT) as ``self.costs``.

        One timed window per path: the first call also pays allocation and
        kernel selection, so the estimate errs on the slow (safe) side; the
        deadline guard then follows what windows really take.
        """
        windows = self._probe_windows()
        for name in self.paths if names is None else names:
            t = time.perf_counter()
            self._run_batch(name, windows)
            self.costs[name] = (time.perf_counter() - t) / self.batch_size
        fill = []
        for _ in range(3):  # the fill: what a window costs without the network; the median, since a single
            t = time.perf_counter()  # timing of a few milliseconds is easily a page fault's or a scheduler's
            self._run_batch(None, windows)
            fill.append((time.perf_counter() - t) / self.batch_size)
        self.costs["fill"] = sorted(fill)[1]
        return dict(self.costs)

    def _probe_windows(self) -> np.ndarray:
        """``(batch_size, 2, W)`` of quiet noise: what setup times the paths on."""
        windows = np.random.default_rng(0).standard_normal((self.batch_size, 2, self.config.window_samples))
        return windows.astype(np.float32) * 0.1

    def plan(self, samples: int):
        """The chunk plan for a track of ``samples`` samples at the model's rate."""
        return plan_for(self.config, samples, self.mode, self.overlap, self.trim)

    def separate(self, audio: np.ndarray, sample_rate: int, progress=None, deadline: float | None = None,
                 path: str = "exact") -> dict[str, np.ndarray]:
        """Separate ``audio (samples,)`` or ``(samples, channels)`` (1 or 2 channels) at ``sample_rate``.

        Returns ``{source: (samples, channels) float32}`` in the input's shape
        and rate: mono is separated as dual-mono and averaged back, other rates
        are resampled to the model's rate and the stems back. ``progress`` is a
        callable ``(done_windows, total_windows)``; ``deadline`` a
        ``time.perf_counter()`` instant to finish by (see :meth:`separate_file`);
        ``path`` picks ``"exact"`` or ``"fast"`` when there is no deadline.
        """
        audio = check_audio(audio)
        if not MIN_RATE <= sample_rate <= MAX_RATE:
            raise ValueError(f"sample_rate must be from {MIN_RATE} to {MAX_RATE} Hz, not {sample_rate}")
        if audio.shape[0] == 0:
            return {s: np.zeros((0, audio.shape[1]), np.float32) for s in self.sources}
        return self._separate_array(audio, int(sample_rate), progress, self._guard(deadline, path))

    def separate_file(self, mixture_path, stem_paths: dict, subtype: str = "FLOAT", progress=None,
                      deadline: float | None = None, path: str = "exact") -> "FileResult":
        """Read ``mixture_path``, separate it, write ``{source: path}`` with the input's length, rate and channels.

        The file is streamed (read and written window by window; other rates
        than the model's are converted on the way, see :mod:`.resample`). Stems are
        written all-or-nothing. ``deadline`` (a ``time.perf_counter()``
        instant) turns on the guard: each window takes the most accurate path
        that still lets the rest finish in time, and when none can, the rest
        is filled with the mixture divided among the sources. Returns timings
        and the windows each path took; raises :class:`~.errors.AudioError`
        naming the file on bad input.
        """
        unknown = set(stem_paths) - set(self.sources)
        if unknown:
            raise ValueError(f"unknown sources {sorted(unknown)}; this model separates {self.sources}")
        t0 = time.perf_counter()
        guard = self._guard(deadline, path)
        with AudioReader(mixture_path) as reader:
            rate, n, channels = reader.sample_rate, reader.frames, reader.channels
            check_space(stem_paths.values(), n, channels, subtype)
            index = {name: i for i, name in enumerate(self.sources)}
            with StemWriter(stem_paths, rate, channels, subtype) as writer:

                def write(block):  # (S, channels, m) -> each stem file, (m, channels)
                    for name in stem_paths:
                        writer.write(name, block[index[name]].T)

                self._separate_stream(reader.read, n, rate, channels, write, guard, progress)
                t1 = time.perf_counter()
                writer.commit()
            warnings = list(reader.warnings)
        t2 = time.perf_counter()
        return FileResult(os.fspath(mixture_path), n / rate, 0.0, t1 - t0, t2 - t1, dict(guard.used),
                          warnings + guard.failures)

    def fill_file(self, mixture_path, stem_paths: dict, subtype: str = "FLOAT") -> None:
        """Write the mixture divided among the sources to each of ``{source: path}``, in blocks, all-or-nothing:
        no network and no conversion, the estimate a song gets when no time is left at all."""
        with AudioReader(mixture_path) as reader:
            n, channels = reader.frames, reader.channels
            with StemWriter(stem_paths, reader.sample_rate, channels, subtype, n) as writer:
                for a in range(0, n, FILL_BLOCK):
                    piece = reader.read(a, min(a + FILL_BLOCK, n))[:channels].T / len(self.sources)
                    for name in stem_paths:
                        writer.write(name, piece)
                writer.commit()

    def _separate_array(self, audio: np.ndarray, rate: int, progress, guard) -> dict[str, np.ndarray]:
        """``audio (samples, channels)`` at ``rate`` -> stems in the same shape and rate."""
        n, channels = audio.shape
        x = np.ascontiguousarray(audio.T)  # (channels, samples)
        stems = np.empty((len(self.sources), channels, n), np.float32)
        done = 0

        def read(a, b):  # (2, b - a): mono as dual-mono
            return np.repeat(x[:, a:b], 2, axis=0) if channels == 1 else x[:, a:b]

        def write(block):  # (S, channels, m), in track order
            nonlocal done
            stems[..., done : done + block.shape[-1]] = block
            done += block.shape[-1]

        self._separate_stream(read, n, rate, channels, write, guard, progress)
        return {name: stem.T for name, stem in zip(self.sources, stems)}

    def _separate_stream(self, read, n: int, rate: int, channels: int, write, guard: DeadlineGuard,
                         progress=None) -> None:
        """Separate ``n`` samples at ``rate`` given as ``read(a, b) -> (2, b - a)``; ``write`` gets ``(S,
        channels, m)`` blocks at ``rate`` in order, ``n`` samples in all. Another rate than the model's is
        converted in streaming blocks both ways (:mod:`.resample`), inside each window's measured cost."""
        back = None
        if rate != self.sample_rate:
            read = ResampledReader(read, n, rate, self.sample_rate)
            back = ResampledWriter(len(self.sources), channels, self.sample_rate, rate, n)
        guard.reserve(COMMIT_S + (FLUSH_S if back else 0.0))

        def sink(block):  # (S, 2, m) at the model's rate
            if channels == 1:
                block = block.mean(axis=1, keepdims=True)
            write(back.push(block) if back else block)

        self._stream(read, read.length if back else n, sink, guard, progress)
        if back:
            write(back.finish())

    def _guard(self, deadline, path: str) -> DeadlineGuard:
        """A guard that always answers ``path`` when there is no deadline."""
        if path not in self.paths:
            raise ValueError(f"no {path!r} path: this separator has {list(self.paths)}")
        if deadline is None:
            return DeadlineGuard(float("inf"), {tier(path, self.shifts if path == "exact" else 0): 0.0})
        missing = [name for name in self.paths if name not in self.costs]
        if missing or "fill" not in self.costs:  # calibrate() always times the fill too
            self.calibrate(missing)
        # Each number of augmented passes is one more accurate path for the guard, costing that many more
        # exact windows, priced from the exact pass's own estimate (scaled): it secures the exact pass for every window
        # first and spends only what is left on passes, window by window (see .deadline).
        costs = {tier("exact", k): (1 + k) * self.costs["exact"] for k in range(self.shifts, 0, -1)}
        costs.update((name, self.costs[name]) for name in self.paths)  # most accurate first
        scaled = {tier("exact", k): ("exact", 1 + k) for k in range(1, self.shifts + 1)}  # one estimate for all
        return DeadlineGuard(deadline, costs, fill_cost=self.costs.get("fill"), secure="exact" if self.shifts else None,
                             scaled=scaled)

    def _run_batch(self, name, windows: np.ndarray) -> np.ndarray:
        """``windows (b, 2, W)`` -> separated ``(b, S, 2, W)`` on path ``name``; ``None``: mixture / S."""
        if name is None:
            return np.repeat(windows[:, None] / len(self.sources), len(self.sources), axis=1)
        path, extra = untier(name)
        if extra:  # the plain pass and ``extra`` augmented ones, each undone, averaged; one at a time (flat memory)
            total = self._run_batch(path, windows)
            for augmentation in self.augmentations[:extra]:
                total += augmentation.undo(self._run_batch(path, augmentation.apply(windows)))
            return total / (1 + extra)
        spec = self.stft.analyse(windows)  # (b, 4, T, F)
        out = interruptible(_guarded_call, self.paths[name], spec)  # SIGTERM is answered during the window
        if not np.isfinite(out).all():  # NaN stems are an error, never a result
            raise WeightFileError(getattr(self.paths[name], "path", None),
                                  "the model produced NaN or infinite values; its weights are unusable")
        # inside the window's cost: the deadline guard counts the post-filter's time too
        out = postfilters.apply(self.postfilter, spec, out, self.iterations)
        return self.stft.synthesise(out)  # (b, S, 2, W)

    def _stream(self, read, samples: int, sink, guard: DeadlineGuard, progress=None) -> None:
        """Separate a stereo track given as an array ``(2, samples)`` or ``read(a, b)``; ``sink`` gets
        ``(S, 2, m)`` blocks in order, together the whole track."""
        plan = self.plan(samples)
        ola = OverlapAdd(plan, len(self.sources), 2)
        t = time.perf_counter()
        for first, windows in window_batches(read, plan, self.batch_size, channels=2):
            while True:
                name = guard.choose(plan.n_windows - first, len(windows))
                network = time.perf_counter()
                try:
                    waves = self._run_batch(name, windows)
                    break
                except BackendFailed as err:
                    if name is None or not math.isfinite(guard.deadline):  # no deadline: the caller's error
                        raise
                    guard.drop(untier(name)[0], err.problem)  # under a deadline: the window takes the next path
            network = time.perf_counter() - network
            for j, y in enumerate(waves):
                sink(ola.add(first + j, y))
            # The cost a window really has: reading it, the network, and the overlap-add and writing it
            # triggers; all but the network is what a filled window costs too.
            end = time.perf_counter()
            guard.observe(name, (end - t) / len(windows), len(windows), (end - t - network) / len(windows))
            t = end
            if progress is not None:
                progress(first + len(waves), plan.n_windows)


def _guarded_call(backend, spec):
    """``backend(spec)``, its runtime's own errors as :class:`BackendFailed` (raised where the call runs, so
    that a signal or the harness's alarm in the waiting thread is never mistaken for one)."""
    try:
        return backend(spec)
    except LightsaftError:
        raise
    except Exception as err:  # ONNX Runtime's, OpenVINO's and torch's own exception types
        from .export import runtime_reason

        raise BackendFailed(getattr(backend, "path", None), f"{backend.name}: {runtime_reason(err, 300)}") from err


def tier(path: str, shifts: int) -> str:
    """The guard's name of ``path`` with ``shifts`` augmented passes: ``exact``, ``exact+2``."""
    return f"{path}+{shifts}" if shifts else path


def untier(name: str) -> tuple[str, int]:
    """The inverse of :func:`tier`: ``"exact+2"`` -> ``("exact", 2)``, ``"fast"`` -> ``("fast", 0)``."""
    path, _, extra = name.partition("+")
    return path, int(extra or 0)


@dataclasses.dataclass
class FileResult:
    """Timings of one :meth:`Separator.separate_file` call, in seconds."""

    path: str
    duration: float  # of the audio
    read: float
    separate: float
    write: float
    windows: dict = dataclasses.field(default_factory=dict)  # windows per path: exact / fast / fill
    warnings: list = dataclasses.field(default_factory=list)  # e.g. a truncated input, one line each

    @property
    def wall(self) -> float:
        return self.read + self.separate + self.write

    @property
    def rtf(self) -> float:
        """Real-time factor: wall time / audio duration."""
        return self.wall / self.duration if self.duration else 0.0
