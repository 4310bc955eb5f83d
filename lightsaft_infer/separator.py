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

from .audio import AudioReader, StemWriter, check_audio, check_space, resample, write_stems
from .backends import Backend, open_backend
from .chunking import DEFAULT_OVERLAP, OverlapAdd, plan_for, window_batches
from .deadline import DeadlineGuard
from .errors import WeightFileError
from . import postfilter as postfilters
from .stft import STFT


#: Seconds kept for closing and renaming the stem files after the last window: closing four float stems of
#: 100 s took 0.08-0.24 s on 2 cores that a training run kept busy (each close flushes and rewrites a header).
COMMIT_S = 0.4
#: Resampling is timed on this many seconds of the song; whole-song estimates are multiplied by RESAMPLE_SAFETY
#: (a whole song costs ~2x what the probe predicts: measured 1.2 s against 0.6 s for 300 s at 48 kHz).
PROBE_S, RESAMPLE_SAFETY = 5, 2.5
#: A disk speed to plan the final writes of resampled stems with (page-cache writes run at ~1 GB/s).
WRITE_BYTES_PER_S = 100e6


class Separator:
    """Separates songs with one backend.

    ``mode`` is ``"overlap"`` (``trim`` samples of context dropped per window
    edge, ``overlap`` fraction cross-faded; default trim 2048, no cross-fade:
    see :mod:`.chunking`) or ``"authors"`` (the authors' MDX chunking: trim
    8192, no cross-fade). ``batch_size`` windows go through
    the network at once (each carries all sources). ``fast`` is an optional
    second, faster backend for the same weights that a deadline may fall back to.
    """

    def __init__(
        self, backend: Backend, mode: str = "overlap", overlap: float = DEFAULT_OVERLAP, trim: int | None = None,
        batch_size: int = 1, threads: int | None = None, fast: Backend | None = None, postfilter: str = "none",
        iterations: int = 1,
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
        self.stft = STFT(self.config.n_fft, self.config.hop_length, workers=threads or 1)
        self.plan(0)  # validate now

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

    @classmethod
    def from_file(cls, path=None, backend: str = "auto", threads: int | None = None, fast: str | None = None,
                  **options) -> "Separator":
        """Load ``path`` (``.safetensors`` / ``.onnx``; default model when None) on ``backend``;
        ``fast`` names a second backend (e.g. ``"openvino-bf16"``) for deadline fallback."""
        fast_backend = open_backend(path, fast, threads) if fast else None
        return cls(open_backend(path, backend, threads), threads=threads, fast=fast_backend, **options)

    @property
    def sources(self) -> tuple:
        return self.config.sources

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def describe(self) -> str:
        c = self.config
        plan = self.plan(0)
        chunking = ("authors' chunking" if self.mode == "authors"
                    else f"trim {plan.trim}" + (f", overlap {self.overlap:g}" if plan.fade else ""))
        filtered = "" if self.postfilter == "none" else f", {self.postfilter} post-filter" + (
            f" ({self.iterations} iteration{'s' * (self.iterations != 1)})" if self.postfilter == "wiener" else "")
        return (f"{c.title} (n_fft {c.n_fft}, {c.n_blocks} blocks, "
                f"{c.internal_channels} channels) on {self.backend.name}, {chunking}{filtered}")

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
        windows = np.random.default_rng(0).standard_normal((self.batch_size, 2, self.config.window_samples))
        windows = windows.astype(np.float32) * 0.1
        for name in self.paths if names is None else names:
            t = time.perf_counter()
            self._run_batch(name, windows)
            self.costs[name] = (time.perf_counter() - t) / self.batch_size
        t = time.perf_counter()
        self._run_batch(None, windows)  # the fill: what a window costs without the network
        self.costs["fill"] = (time.perf_counter() - t) / self.batch_size
        return dict(self.costs)

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
        if int(sample_rate) <= 0:
            raise ValueError(f"sample_rate must be positive, not {sample_rate}")
        if audio.shape[0] == 0:
            return {s: np.zeros((0, audio.shape[1]), np.float32) for s in self.sources}
        return self._separate_array(audio, int(sample_rate), progress, self._guard(deadline, path))

    def separate_file(self, mixture_path, stem_paths: dict, subtype: str = "FLOAT", progress=None,
                      deadline: float | None = None, path: str = "exact") -> "FileResult":
        """Read ``mixture_path``, separate it, write ``{source: path}`` with the input's length, rate and channels.

        At the model's sample rate the file is streamed (read and written
        window by window); other rates are read whole and resampled. Stems are
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
            if rate != self.sample_rate:  # resampling needs the whole signal: read, separate, then write
                stems = self._separate_array(reader.read(0, n)[:channels].T, rate, progress, guard)
                t1 = time.perf_counter()
                write_stems({p: stems[name] for name, p in stem_paths.items()}, rate, subtype)
            else:  # streamed: read and written window by window
                index = {name: i for i, name in enumerate(self.sources)}
                guard.reserve(COMMIT_S)
                with StemWriter(stem_paths, rate, channels, subtype) as writer:

                    def sink(block):  # (S, 2, m) -> each stem file, (m, channels)
                        for name in stem_paths:
                            piece = block[index[name]]
                            writer.write(name, piece.mean(axis=0, keepdims=True).T if channels == 1 else piece.T)

                    self._stream(reader.read, n, sink, guard, progress)
                    t1 = time.perf_counter()
                    writer.commit()
            warnings = list(reader.warnings)
        t2 = time.perf_counter()
        return FileResult(os.fspath(mixture_path), n / rate, 0.0, t1 - t0, t2 - t1, dict(guard.used), warnings)

    def _separate_array(self, audio: np.ndarray, rate: int, progress, guard) -> dict[str, np.ndarray]:
        """``audio (samples, channels)`` at ``rate`` -> stems in the same shape and rate."""
        n_in, channels = audio.shape
        if rate != self.sample_rate and math.isfinite(guard.deadline):
            # Resampling the song in and its stems back is outside the windows: time it on a piece of
            # this song, and when even that cannot finish, give the mixture divided among the sources at
            # the song's own rate (no resampling at all).
            probe = audio[: min(n_in, PROBE_S * rate)]
            t = time.perf_counter()
            resample(probe, rate, self.sample_rate)
            per_sample = (time.perf_counter() - t) / max(len(probe), 1)
            estimate = RESAMPLE_SAFETY * per_sample * n_in * (1 + len(self.sources)) + self._write_estimate(n_in, channels)
            if guard.left() < estimate:
                guard.used["fill"] = self.plan(int(n_in * self.sample_rate / rate)).n_windows
                return {name: audio / len(self.sources) for name in self.sources}
        t = time.perf_counter()
        x = resample(audio, rate, self.sample_rate)
        if rate != self.sample_rate:  # the stems go back the same way: keep their time aside
            guard.reserve(RESAMPLE_SAFETY * len(self.sources) * (time.perf_counter() - t)
                          + self._write_estimate(n_in, channels))  # fmt: skip
        if channels == 1:
            x = np.repeat(x, 2, axis=1)
        x = np.ascontiguousarray(x.T)  # (2, samples)
        stems = np.empty((len(self.sources), 2, x.shape[1]), np.float32)
        done = 0

        def sink(block):  # (S, 2, m), in track order
            nonlocal done
            stems[..., done : done + block.shape[-1]] = block
            done += block.shape[-1]

        self._stream(x, x.shape[1], sink, guard, progress)
        out = {}
        for name, stem in zip(self.sources, stems):
            stem = stem.T
            if channels == 1:
                stem = stem.mean(axis=1, keepdims=True)
            out[name] = resample(stem, self.sample_rate, rate, length=n_in)  # a view when nothing changes
        return out

    def _write_estimate(self, frames: int, channels: int) -> float:
        """Seconds to write four float stems of ``frames`` x ``channels``, at a pessimistic disk speed."""
        return COMMIT_S + len(self.sources) * frames * channels * 4 / WRITE_BYTES_PER_S

    def _guard(self, deadline, path: str) -> DeadlineGuard:
        """A guard that always answers ``path`` when there is no deadline."""
        if path not in self.paths:
            raise ValueError(f"no {path!r} path: this separator has {list(self.paths)}")
        if deadline is None:
            return DeadlineGuard(float("inf"), {path: 0.0})
        missing = [name for name in self.paths if name not in self.costs]
        if missing or "fill" not in self.costs:  # calibrate() always times the fill too
            self.calibrate(missing)
        return DeadlineGuard(deadline, {name: self.costs[name] for name in self.paths},  # most accurate first
                             fill_cost=self.costs.get("fill"))  # fmt: skip

    def _run_batch(self, name, windows: np.ndarray) -> np.ndarray:
        """``windows (b, 2, W)`` -> separated ``(b, S, 2, W)`` on path ``name``; ``None``: mixture / S."""
        if name is None:
            return np.repeat(windows[:, None] / len(self.sources), len(self.sources), axis=1)
        spec = self.stft.analyse(windows)  # (b, 4, T, F)
        out = self.paths[name](spec)
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
            name = guard.choose(plan.n_windows - first, len(windows))
            network = time.perf_counter()
            waves = self._run_batch(name, windows)
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
