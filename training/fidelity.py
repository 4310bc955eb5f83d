"""How close a fast path's stems are to the exact path's, song by song, where no references exist.

    python -m training.fidelity ROOT --weights NAME.onnx [--backend openvino-int8] [--songs 8] [--json F]

Separates every ``ROOT/<song>/mixture.wav`` (sorted, the first ``--songs``) with the same
:class:`~lightsaft_infer.separator.Separator` twice, once on the exact path (ONNX Runtime) and once on
``--backend``, and scores each of the fast path's stems with the challenge's SDR against the exact
path's stem: higher is closer, and it needs no ground truth. That makes it the measure for the
random-weight fixtures of the authors' networks, whose scores against true stems mean nothing;
with trained weights ``lightsaft-infer evaluate --against`` gives the change in score instead.
"""

from __future__ import annotations

import argparse
import glob
import os

import numpy as np

from lightsaft_infer.evaluate import write_json


def fidelity(weights, mixtures, backend: str = "openvino-int8", threads: int | None = None) -> dict:
    """``{"songs": n, "per_stem": {stem: mean dB}, "mean": dB, "per_song": [{stem: dB}]}``."""
    from lightsaft_infer.audio import read_audio
    from lightsaft_infer.mdx import mdx_sdr
    from lightsaft_infer.separator import Separator

    exact = Separator.from_file(weights, backend="onnx", threads=threads)
    fast = Separator.from_file(weights, backend=backend, threads=threads)
    per_song = []
    for path in mixtures:
        audio, rate = read_audio(path)
        a, b = exact.separate(audio, rate), fast.separate(audio, rate)
        per_song.append({stem: mdx_sdr(a[stem], b[stem]) for stem in exact.sources})
    per_stem = {stem: float(np.mean([s[stem] for s in per_song])) for stem in exact.sources}
    return {"weights": os.fspath(weights), "backend": backend, "songs": len(per_song), "per_stem": per_stem,
            "mean": float(np.mean(list(per_stem.values()))), "per_song": per_song}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="folder with <song>/mixture.wav (songs the int8 model was not calibrated on)")
    p.add_argument("--weights", required=True, help="the ONNX export (NAME.onnx)")
    p.add_argument("--backend", default="openvino-int8")
    p.add_argument("--songs", type=int, default=8)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the report here")
    args = p.parse_args(argv)
    mixtures = sorted(glob.glob(os.path.join(args.root, "*", "mixture.wav")))[: args.songs]
    if not mixtures:
        p.error(f"{args.root}: no <song>/mixture.wav")
    report = fidelity(args.weights, mixtures, args.backend, args.threads)
    print(f"{args.weights} {args.backend} against the exact path, {report['songs']} songs, MDX SDR in dB: "
          + ", ".join(f"{k} {v:.2f}" for k, v in report["per_stem"].items()) + f"; mean {report['mean']:.2f}")
    if args.json:
        write_json(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
