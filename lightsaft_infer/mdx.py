"""A local stand-in for the grader's ``evaluator.music_demixing`` harness.

Same behaviour as the Music Demixing Challenge starter kit: environment
variables ``TEST_DATASET_PATH``, ``RESULTS_DATASET_PATH``,
``PARTIAL_RUN_MUSIC_NAMES``, ``INFERENCE_SETUP_TIMEOUT_SECONDS`` and
``INFERENCE_PER_MUSIC_TIMEOUT_SECONDS``; a SIGALRM limit around setup and
around each song's ``prediction`` call; ``<results>/<song>/<stem>.wav``;
verification that every stem exists (after all songs); and MDX SDR scoring where a song's
folder holds its reference stems. ``predict.py`` uses the grader's own copy
when it is importable and this one otherwise.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

import numpy as np

INSTRUMENTS = ("bass", "drums", "other", "vocals")  # keyword order of ``prediction``
ROUND2_FACTOR = 1.57


class TimeoutException(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise :class:`TimeoutException` in the main thread after ``seconds`` (SIGALRM; fractions count)."""

    def handler(signum, frame):
        raise TimeoutException("Prediction timed out!")

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def seconds_setting(name: str, default: str) -> float:
    """A time limit from the environment: any positive number of seconds (``240``, ``2.5``), else one line."""
    text = os.getenv(name, default)
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1e9:  # NaN too
        raise ValueError(f"{name}={text!r} is not a positive number of seconds")
    return value


def per_song_timeout() -> float:
    """The harness's per-song limit, ``INFERENCE_PER_MUSIC_TIMEOUT_SECONDS`` (default 240)."""
    return seconds_setting("INFERENCE_PER_MUSIC_TIMEOUT_SECONDS", "240")


def song_budget(duration: float) -> tuple[float, float]:
    """``(round-1 limit, round-2 limit = 1.57 × duration)`` in seconds for a song of ``duration`` seconds."""
    return float(per_song_timeout()), ROUND2_FACTOR * duration


def reference_stem(folder, stem: str):
    """``folder/<stem>.wav`` or ``.flac`` (the committed demo song keeps its stems as FLAC), or None."""
    for ext in (".wav", ".flac"):
        path = os.path.join(folder, stem + ext)
        if os.path.exists(path):
            return path
    return None


def mdx_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """The challenge's SDR: ``10·log10((Σ s² + 1e-7) / (Σ (s - ŝ)² + 1e-7))`` over samples and channels."""
    reference = np.asarray(reference, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    num = np.sum(reference**2) + 1e-7
    den = np.sum((reference - estimate) ** 2) + 1e-7
    return float(10.0 * np.log10(num / den))


class MusicDemixingPredictor:
    """Subclass and implement ``prediction_setup`` and ``prediction``; ``run()`` evaluates."""

    def __init__(self):
        self.test_data_path = os.getenv("TEST_DATASET_PATH", os.getcwd() + "/data/test/")
        self.results_data_path = os.getenv("RESULTS_DATASET_PATH", os.getcwd() + "/data/results/")
        self.inference_setup_timeout = seconds_setting("INFERENCE_SETUP_TIMEOUT_SECONDS", "900")
        self.inference_per_music_timeout = per_song_timeout()
        self.partial_run = os.getenv("PARTIAL_RUN_MUSIC_NAMES", None)
        self.results = []
        self.current_music_name = None

    # -- the two methods a submission implements ------------------------
    def prediction_setup(self):
        raise NotImplementedError

    def prediction(self, mixture_file_path, bass_file_path, drums_file_path, other_file_path, vocals_file_path):
        raise NotImplementedError

    # -- harness --------------------------------------------------------
    def get_all_music_names(self):
        wanted = self.partial_run.split(",") if self.partial_run else None
        names = sorted(
            d for d in os.listdir(self.test_data_path) if os.path.isdir(os.path.join(self.test_data_path, d))
        )
        return [d for d in names if wanted is None or d in wanted]

    def get_music_file_location(self, music_name, instrument=None):
        if instrument is None:
            return os.path.join(self.test_data_path, music_name, "mixture.wav")
        os.makedirs(os.path.join(self.results_data_path, music_name), exist_ok=True)
        return os.path.join(self.results_data_path, music_name, instrument + ".wav")

    def setup(self):
        with time_limit(self.inference_setup_timeout):
            self.prediction_setup()

    def verify_results(self, music_name) -> bool:
        """Every stem exists and has the mixture's length, rate and channel count."""
        from .audio import audio_info

        try:
            mixture = audio_info(self.get_music_file_location(music_name))  # never opens a FIFO
        except Exception:  # an unreadable mixture: only the stems' existence can be checked
            mixture = None
        for instrument in INSTRUMENTS:
            path = os.path.join(self.results_data_path, music_name, instrument + ".wav")
            if not os.path.exists(path):
                print(f"{music_name}: {instrument}.wav is missing")
                return False
            if mixture is None:
                continue
            stem = audio_info(path)
            if (stem.frames, stem.samplerate, stem.channels) != (mixture.frames, mixture.samplerate, mixture.channels):
                print(f"{music_name}: {instrument}.wav is {stem.frames} frames, {stem.samplerate} Hz, "
                      f"{stem.channels} ch; the mixture is {mixture.frames}, {mixture.samplerate}, {mixture.channels}")
                return False
        return True

    def evaluation(self):
        for music_name in self.get_all_music_names():
            self.current_music_name = music_name
            print("Evaluating for", music_name, flush=True)
            start = time.perf_counter()
            with time_limit(self.inference_per_music_timeout):
                self.prediction(
                    mixture_file_path=self.get_music_file_location(music_name),
                    bass_file_path=self.get_music_file_location(music_name, "bass"),
                    drums_file_path=self.get_music_file_location(music_name, "drums"),
                    other_file_path=self.get_music_file_location(music_name, "other"),
                    vocals_file_path=self.get_music_file_location(music_name, "vocals"),
                )
            self.results.append({"music_name": music_name, "seconds": time.perf_counter() - start})

    def verify_all(self) -> list:
        """Songs whose stems fail :meth:`verify_results` (checked after all songs, as the grader does)."""
        return [r["music_name"] for r in self.results if not self.verify_results(r["music_name"])]

    def scoring(self):
        """MDX SDR per stem for songs whose folder holds reference stems (``<stem>.wav`` or ``.flac``);
        prints a table, returns the mean."""
        import soundfile as sf

        rows = []
        for result in self.results:
            if result["music_name"] in getattr(self, "unverified", ()):
                continue
            name = result["music_name"]
            scores = {}
            for instrument in INSTRUMENTS:
                ref_path = reference_stem(os.path.join(self.test_data_path, name), instrument)
                if ref_path is None:
                    continue
                reference, _ = sf.read(ref_path, always_2d=True)
                estimate, _ = sf.read(self.get_music_file_location(name, instrument), always_2d=True)
                scores[instrument] = mdx_sdr(reference, estimate)
            if scores:
                result["sdr"] = scores
                result["sdr_mean"] = float(np.mean(list(scores.values())))
                rows.append(result)
        if rows:
            print("song".ljust(24) + "".join(i.rjust(9) for i in INSTRUMENTS) + "mean".rjust(9))
            for r in rows:
                cells = "".join(f"{r['sdr'].get(i, float('nan')):9.3f}" for i in INSTRUMENTS)
                print(r["music_name"][:23].ljust(24) + cells + f"{r['sdr_mean']:9.3f}")
            mean = float(np.mean([r["sdr_mean"] for r in rows]))
            print(f"mean MDX SDR over {len(rows)} songs: {mean:.3f} dB")
            return mean
        return None

    def run(self):
        self.setup()
        self.evaluation()
        self.unverified = self.verify_all()
        self.scoring()
        if self.unverified:
            raise Exception(f"verification failed, demixed files not found: {', '.join(self.unverified)}")
        print("Evaluation completed")
