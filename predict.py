"""Music Demixing Challenge entry point: ``python predict.py``.

The grader replaces ``evaluator/`` with its own harness; when it is absent we
use ``lightsaft_infer.mdx``, which behaves the same way. Configuration by
environment: ``LIGHTSAFT_WEIGHTS`` (a ``.safetensors`` or ``.onnx`` file, or the name of a model
pulled beforehand with ``lightsaft-infer pull``: nothing is downloaded here;
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

Setup is ``lightsaft_infer.grading.prepare``: the exact engines are tried in turn (an engine that cannot
load costs its speed, not the submission; when none loads every song is filled), and an unusable setting
is a warning and the default.

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

from lightsaft_infer.audio import audio_info, write_silence
from lightsaft_infer.grading import (LONG_SONG_S, NoNetwork, choose_exact, exact_could_miss, fast_backend,  # noqa: F401
                                     fast_needed, prepare, shifts_setting, song_deadline, tuning)
from lightsaft_infer.errors import LightsaftError
from lightsaft_infer.files import check_writable as writable

from lightsaft_infer.separator import untier
from lightsaft_infer.signals import leave

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
        try:
            self.separator, notes = prepare(weights, settings)
        except (LightsaftError, ValueError) as err:  # the weights themselves: nothing to separate with
            raise SystemExit(f"predict.py: error: {err}") from None
        self.no_network = isinstance(self.separator.backend, NoNetwork)
        costs = self.separator.costs
        speeds = ", ".join(f"{k} {v:.2f} s/window" for k, v in costs.items())
        extra = "".join(f"; {n}" for n in notes)
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
