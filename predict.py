"""Music Demixing Challenge entry point: ``python predict.py``.

The grader replaces ``evaluator/`` with its own harness; when it is absent we
use ``lightsaft_infer.mdx``, which behaves the same way. Configuration by
environment: ``LIGHTSAFT_WEIGHTS`` (a ``.safetensors`` or ``.onnx`` file;
default ``weights/default.safetensors``), ``LIGHTSAFT_BACKEND``
(``auto``/``torch``/``onnx``), ``LIGHTSAFT_MODE`` (``overlap``/``authors``),
``LIGHTSAFT_OVERLAP``, ``LIGHTSAFT_NUM_THREADS``.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

try:
    from evaluator.music_demixing import MusicDemixingPredictor
except ImportError:
    from lightsaft_infer.mdx import MusicDemixingPredictor

from lightsaft_infer.chunking import DEFAULT_OVERLAP
from lightsaft_infer.mdx import song_budget
from lightsaft_infer.separator import Separator


class LightSAFTPredictor(MusicDemixingPredictor):
    def prediction_setup(self):
        start = time.perf_counter()
        self.separator = Separator.from_file(
            os.environ.get("LIGHTSAFT_WEIGHTS") or None,
            backend=os.environ.get("LIGHTSAFT_BACKEND", "auto"),
            mode=os.environ.get("LIGHTSAFT_MODE", "overlap"),
            overlap=float(os.environ.get("LIGHTSAFT_OVERLAP", DEFAULT_OVERLAP)),
        )
        self.separator.warm_up()
        print(f"setup: {self.separator.describe()} loaded and warmed up in {time.perf_counter() - start:.1f} s", flush=True)

    def prediction(self, mixture_file_path, bass_file_path, drums_file_path, other_file_path, vocals_file_path):
        paths = {"bass": bass_file_path, "drums": drums_file_path, "other": other_file_path, "vocals": vocals_file_path}
        result = self.separator.separate_file(mixture_file_path, paths)
        round1, round2 = song_budget(result.duration)
        budget = min(round1, round2)
        print(
            f"{os.path.basename(os.path.dirname(mixture_file_path))}: {result.duration:.1f} s of audio in "
            f"{result.wall:.1f} s (RTF {result.rtf:.2f}); budget {round1:.0f} s (round 1), {round2:.1f} s (round 2): "
            f"margin {budget - result.wall:.1f} s",
            flush=True,
        )


if __name__ == "__main__":
    LightSAFTPredictor().run()
