"""What each augmented pass buys: the gain of every pass kind alone and of N passes in the default order.

    python -m training.augment_study ROOT --split test [--weights W] [--songs 8] [--json F]

Per song, the plain pass and each pass of :func:`lightsaft_infer.augment.default_order` are run *once*
each on the exact path (each augmented pass undone, not averaged), then every combination is an average
of those outputs computed here: that costs 1 + 7 passes per song instead of one run per variant, and the
averages are exactly what ``--shifts N`` computes (the mean of the plain and the undone outputs, per
window, before the overlap-add, which is linear). Scores are the challenge's MDX SDR against the song's
stems, with mix/4 and the ideal ratio mask beside them.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from lightsaft_infer.evaluate import write_json


def _one_pass_separator(weights, threads=None):
    """A separator whose exact path runs only the augmentation in ``.only`` (undone), or the plain pass."""
    from lightsaft_infer.separator import Separator

    class OnePass(Separator):
        only = None

        def _run_batch(self, name, windows):
            if self.only is None or name is None:
                return super()._run_batch(name, windows)
            p, self.only = self.only, None  # the inner call is the plain network on the augmented windows
            try:
                return p.undo(super()._run_batch(name, p.apply(windows)))
            finally:
                self.only = p

    return OnePass.from_file(weights, backend="onnx", threads=threads)


def study(weights, songs, threads=None, progress=print) -> dict:
    from lightsaft_infer.audio import read_audio
    from lightsaft_infer.evaluate import ideal_ratio_mask
    from lightsaft_infer.mdx import mdx_sdr, reference_stem

    sep = _one_pass_separator(weights, threads)
    order = sep.augmentations
    sources = sep.sources
    rows = []
    for i, song in enumerate(songs):
        mixture, rate = read_audio(os.path.join(song, "mixture.wav"))
        refs = {s: read_audio(reference_stem(song, s))[0] for s in sources}
        outputs = []
        for p in (None,) + tuple(order):
            sep.only = p
            outputs.append(sep.separate(mixture, rate))
        sep.only = None

        def score(est):
            return {s: mdx_sdr(refs[s], est[s]) for s in sources}

        row = {"song": os.path.basename(song), "duration": len(mixture) / rate,
               "mix/4": score({s: mixture / 4 for s in sources}), "IRM": score(ideal_ratio_mask(mixture, refs, sep.stft)),
               "plain": score(outputs[0])}  # fmt: skip
        for k, p in enumerate(order, 1):  # each kind alone, averaged with the plain pass
            row[f"+{p.name}"] = score({s: (outputs[0][s] + outputs[k][s]) / 2 for s in sources})
        for n in range(2, len(order) + 1):  # the first n passes of the default order, as --shifts n
            row[f"--shifts {n}"] = score({s: sum(o[s] for o in outputs[: n + 1]) / (n + 1) for s in sources})
        rows.append(row)
        progress(f"[{i + 1}/{len(songs)}] {row['song']}: plain {np.mean(list(row['plain'].values())):.3f} dB, "
                 f"--shifts {len(order)} {np.mean(list(row[f'--shifts {len(order)}'].values())):.3f} dB")
    variants = [k for k in rows[0] if k not in ("song", "duration")]
    summary = {}
    for v in variants:
        per_stem = {s: float(np.mean([r[v][s] for r in rows])) for s in sources}
        mean = [float(np.mean(list(r[v].values()))) for r in rows]
        plain = [float(np.mean(list(r["plain"].values()))) for r in rows]
        summary[v] = {"per_stem": per_stem, "mean": float(np.mean(mean)),
                      "gain": float(np.mean(mean) - np.mean(plain)),
                      "songs_improved": int(sum(m > p + 1e-9 for m, p in zip(mean, plain)))}  # fmt: skip
        summary[v]["extra_passes"] = (0 if v in ("plain", "mix/4", "IRM") else 1 if v.startswith("+")
                                      else int(v.split()[1]))
    return {"weights": os.fspath(weights or "default"), "songs": len(rows), "order": [p.name for p in order],
            "summary": summary, "per_song": rows}


def format_study(report: dict) -> str:
    sources = list(next(iter(report["summary"].values()))["per_stem"])
    lines = [f"{'variant':>22} {'passes':>6} " + " ".join(f"{s:>7}" for s in sources) + f" {'mean':>7} {'gain':>7} improved"]
    for v, r in report["summary"].items():
        gain = "" if v in ("mix/4", "IRM") else f"{r['gain']:+.3f}"
        improved = "" if v in ("mix/4", "IRM", "plain") else f"{r['songs_improved']}/{report['songs']}"
        lines.append(f"{v:>22} {1 + r['extra_passes'] if v not in ('mix/4', 'IRM') else '':>6} "
                     + " ".join(f"{r['per_stem'][s]:7.3f}" for s in sources) + f" {r['mean']:7.3f} {gain:>7} {improved}")
    return "\n".join(lines)


def main(argv=None) -> int:
    from lightsaft_infer.evaluate import song_folders

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="folder with SPLIT/<song>/{mixture,vocals,drums,bass,other}.wav")
    p.add_argument("--split", default="test")
    p.add_argument("--weights", default=None, help="default: the shipped model")
    p.add_argument("--songs", type=int, default=None, help="only the first N songs (sorted)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    songs = song_folders(args.root, args.split)[: args.songs]
    report = study(args.weights, songs, args.threads)
    print(format_study(report))
    if args.json:
        write_json(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
