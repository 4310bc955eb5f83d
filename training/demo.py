"""Cut the committed demo song from a test-split song: ``data/test/<song>/``.

    python -m training.demo ROOT/test/synth-test-000 --seconds 20 --out data/test

``mixture.wav`` (16-bit WAV, what the grader reads) and the four reference stems as FLAC (lossless,
smaller); the cut is taken from the int16 stems and the mixture re-summed, so it stays exact.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import soundfile as sf

STEMS = ("vocals", "drums", "bass", "other")


def cut(song: str, seconds: float, out_root: str, start: float = 0.0) -> str:
    rate = sf.info(os.path.join(song, "mixture.wav")).samplerate
    a, n = int(start * rate), int(seconds * rate)
    stems = {s: sf.read(os.path.join(song, f"{s}.wav"), dtype="int16", start=a, frames=n)[0] for s in STEMS}
    mixture = sum(x.astype(np.int32) for x in stems.values())
    out = os.path.join(out_root, os.path.basename(os.path.normpath(song)))
    os.makedirs(out, exist_ok=True)
    sf.write(os.path.join(out, "mixture.wav"), mixture.astype(np.int16), rate, subtype="PCM_16")
    for s, x in stems.items():
        sf.write(os.path.join(out, f"{s}.flac"), x, rate, subtype="PCM_16")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("song")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--start", type=float, default=0.0)
    p.add_argument("--out", default="data/test")
    a = p.parse_args(argv)
    print(cut(a.song, a.seconds, a.out, a.start))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
