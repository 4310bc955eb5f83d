"""The public entry: :class:`Separator` — one song in, four stems out.

Used alike by the CLI, ``predict.py`` and the benchmark::

    sep = Separator.from_file("weights/default.safetensors", backend="onnx")
    stems = sep.separate(audio, 44100)   # {"vocals": (samples, channels), ...}

Per window the STFT is computed once, the backend runs all sources from it in
one batch, and the iSTFT outputs are cross-faded into the track (see
:mod:`.chunking`). Memory stays bounded by ``batch_size`` windows plus the
output stems; no whole-song spectrogram is ever built.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from .audio import check_audio, read_audio, resample, write_stems
from .backends import Backend, open_backend
from .chunking import DEFAULT_OVERLAP, OverlapAdd, plan_chunks, window_batches
from .stft import STFT


class Separator:
    """Separates songs with one backend.

    ``mode`` is ``"overlap"`` (cross-faded windows, ``overlap`` fraction and
    ``trim`` samples of context dropped per edge) or ``"authors"`` (the authors'
    MDX chunking: trim 8192, no cross-fade). ``batch_size`` windows go through
    the network at once (each carries all sources).
    """

    def __init__(
        self, backend: Backend, mode: str = "overlap", overlap: float = DEFAULT_OVERLAP, trim: int | None = None,
        batch_size: int = 1, threads: int | None = None,
    ):  # fmt: skip
        self.backend, self.config = backend, backend.config
        self.mode, self.overlap, self.trim = mode, overlap, trim
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.batch_size = batch_size
        self.stft = STFT(self.config.n_fft, self.config.hop_length, workers=threads or 1)
        plan_chunks(0, self.config.window_samples, self.config.hop_length, mode, overlap, trim)  # validate now

    @classmethod
    def from_file(cls, path=None, backend: str = "auto", threads: int | None = None, **options) -> "Separator":
        """Load ``path`` (``.safetensors`` / ``.onnx``; default model when None) on ``backend``."""
        return cls(open_backend(path, backend, threads), threads=threads, **options)

    @property
    def sources(self) -> tuple:
        return self.config.sources

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def describe(self) -> str:
        c = self.config
        chunking = "authors' chunking" if self.mode == "authors" else f"overlap {self.overlap:g}"
        return (f"{'LightSAFT' if c.block == 'lightsaft' else 'LaSAFT'} (n_fft {c.n_fft}, {c.n_blocks} blocks, "
                f"{c.internal_channels} channels) on {self.backend.name}, {chunking}")

    def warm_up(self) -> None:
        """Run one silent window so that first-call costs (kernel selection, allocation) are paid at setup."""
        frames = self.config.num_frame
        self.backend(np.zeros((1, 4, frames, self.config.n_bins), np.float32))

    def plan(self, samples: int):
        """The chunk plan for a track of ``samples`` samples at the model's rate."""
        return plan_chunks(samples, self.config.window_samples, self.config.hop_length, self.mode, self.overlap, self.trim)

    def separate(self, audio: np.ndarray, sample_rate: int, progress=None) -> dict[str, np.ndarray]:
        """Separate ``audio (samples,)`` or ``(samples, channels)`` (1 or 2 channels) at ``sample_rate``.

        Returns ``{source: (samples, channels) float32}`` in the input's shape
        and rate: mono is separated as dual-mono and averaged back, other rates
        are resampled to the model's rate and the stems back. ``progress`` is a
        callable ``(done_windows, total_windows)``.
        """
        audio = check_audio(audio)
        if int(sample_rate) <= 0:
            raise ValueError(f"sample_rate must be positive, not {sample_rate}")
        n_in, channels = audio.shape
        if n_in == 0:
            return {s: np.zeros((0, channels), np.float32) for s in self.sources}
        x = resample(audio, int(sample_rate), self.sample_rate)
        if channels == 1:
            x = np.repeat(x, 2, axis=1)
        stems = self._separate_stereo(np.ascontiguousarray(x.T), progress)  # (S, 2, samples)
        out = {}
        for name, stem in zip(self.sources, stems):
            stem = stem.T
            if channels == 1:
                stem = stem.mean(axis=1, keepdims=True)
            out[name] = resample(stem, self.sample_rate, int(sample_rate), length=n_in)  # a view when nothing changes
        return out

    def separate_file(self, mixture_path, stem_paths: dict, subtype: str = "FLOAT", progress=None) -> "FileResult":
        """Read ``mixture_path``, separate it, write ``{source: path}`` with the input's length, rate and channels.

        Stems are written all-or-nothing. Returns timings; raises
        :class:`~.errors.AudioError` naming the file on bad input.
        """
        unknown = set(stem_paths) - set(self.sources)
        if unknown:
            raise ValueError(f"unknown sources {sorted(unknown)}; this model separates {self.sources}")
        t0 = time.perf_counter()
        audio, rate = read_audio(mixture_path)
        t1 = time.perf_counter()
        stems = self.separate(audio, rate, progress)
        t2 = time.perf_counter()
        write_stems({path: stems[name] for name, path in stem_paths.items()}, rate, subtype)
        t3 = time.perf_counter()
        return FileResult(os.fspath(mixture_path), audio.shape[0] / rate, t1 - t0, t2 - t1, t3 - t2)

    def _separate_stereo(self, x: np.ndarray, progress=None) -> np.ndarray:
        """``x (2, samples)`` at the model's rate -> ``(S, 2, samples)``."""
        plan = self.plan(x.shape[1])
        ola = OverlapAdd(plan, len(self.sources), 2)
        for first, windows in window_batches(x, plan, self.batch_size):
            spec = self.stft.analyse(windows)  # (b, 4, T, F)
            waves = self.stft.synthesise(self.backend(spec))  # (b, S, 2, W)
            for j, y in enumerate(waves):
                ola.add(first + j, y)
            if progress is not None:
                progress(first + len(waves), plan.n_windows)
        return ola.result()


@dataclasses.dataclass
class FileResult:
    """Timings of one :meth:`Separator.separate_file` call, in seconds."""

    path: str
    duration: float  # of the audio
    read: float
    separate: float
    write: float

    @property
    def wall(self) -> float:
        return self.read + self.separate + self.write

    @property
    def rtf(self) -> float:
        """Real-time factor: wall time / audio duration."""
        return self.wall / self.duration if self.duration else 0.0
