"""What each augmented pass buys, and in which order to add them (issue 34).

    python -m training.augment_study ROOT --split test [--weights W] [--songs N] --json test.json
    python -m training.augment_study --choose-on test.json --score-on shift.json

The first form runs, per song, the plain pass and every candidate pass (:func:`candidates`) *once* on the
exact path, each undone, and keeps of them only what scoring needs: per stem, the Gram matrix of the
passes' errors ``G[i, j] = <s - ŝ_i, s - ŝ_j>`` over samples and channels, whole and per window. Any
average of passes is then scored exactly without running it again, since for ``ŝ = mean_{i ∈ P} ŝ_i``

    Σ (s - ŝ)² = Σ_{i, j ∈ P} G[i, j] / |P|²        (MDX SDR = 10·log10((Σ s² + 1e-7) / (that + 1e-7)))

and the same holds window by window, because the default chunking's kept parts do not overlap: a song whose
windows got different numbers of passes (the deadline guard's case) is scored from the per-window matrices.
The averages are what ``--shifts`` computes (the mean of the plain and the undone outputs per window, before
the overlap-add, which is linear). The run also measures, per song, the two questions that need the
waveforms: the averaging domain (waveforms against a magnitude average with the complex mean's phase) and
the continuity at the joins of windows with and without passes.

The second form picks the order greedily on one split's report (each step adds the candidate with the largest
mean gain given those before it: every pass costs the same, one exact pass per window, so that is the order
of gain per second) and scores it, and the shipped order, on the other split's report.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from lightsaft_infer.augment import Pass, default_order
from lightsaft_infer.evaluate import write_json

EPS = 1e-7  # the MDX SDR's


def candidates(hop: int, trim: int) -> tuple:
    """The passes the study measures: shifts of every eighth of a hop, swap, flip, both, and half-hop or
    quarter-hop shifts combined with them (those within ``trim``)."""
    shifts = tuple(Pass(shift=k * hop // 8) for k in range(1, 8))
    mixed = (Pass(swap=True), Pass(flip=True), Pass(swap=True, flip=True), Pass(shift=hop // 2, swap=True),
             Pass(shift=hop // 2, flip=True), Pass(shift=hop // 4, swap=True, flip=True))  # fmt: skip
    return tuple(p for p in shifts + mixed if p.shift <= trim)


def gram(reference: np.ndarray, estimates: list, bounds) -> tuple:
    """``reference (n, c)`` and ``estimates`` (m arrays like it) -> the errors' Gram matrix ``(m, m)``, one per
    window ``(w, m, m)`` for the sample ranges ``bounds`` ``[(a, b), ...]``, and ``Σ s²`` per window ``(w,)``."""
    errors = np.stack([(reference - e).astype(np.float64).reshape(len(reference), -1) for e in estimates])
    ref = reference.astype(np.float64).reshape(len(reference), -1)
    per_window = np.stack([np.einsum("itc,jtc->ij", errors[:, a:b], errors[:, a:b]) for a, b in bounds])
    energy = np.array([np.sum(ref[a:b] ** 2) for a, b in bounds])
    return per_window.sum(0), per_window, energy


def sdr_of(G: np.ndarray, energy: float, passes) -> float:
    """MDX SDR of the mean of ``passes`` (indices into ``G``'s rows) from the errors' Gram matrix."""
    idx = np.asarray(passes)
    return float(10 * np.log10((energy + EPS) / (G[np.ix_(idx, idx)].sum() / len(idx) ** 2 + EPS)))


def sdr_per_window(Gw: np.ndarray, energy: float, passes_of_window) -> float:
    """MDX SDR when window ``w`` averages the passes ``passes_of_window[w]``."""
    err = sum(Gw[w][np.ix_(p, p)].sum() / len(p) ** 2 for w, p in enumerate(map(np.asarray, passes_of_window)))
    return float(10 * np.log10((energy + EPS) / (err + EPS)))


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


def _magnitude_mean(outputs: list, stft) -> np.ndarray:
    """The passes averaged in the magnitude domain: mean ``|Y_i|`` with the phase of the complex mean, on the
    plain pass's frame grid. ``outputs``: ``(n, c)`` arrays -> ``(n, c)``."""
    n = len(outputs[0])
    pad = stft.hop - n % stft.hop
    specs = [stft.forward(np.pad(o, ((0, pad), (0, 0))).T) for o in outputs]
    mean = sum(specs) / len(specs)
    magnitude = sum(np.abs(s) for s in specs) / len(specs)
    return stft.inverse(magnitude * np.exp(1j * np.angle(mean)))[:, :n].T


def _join_step(y: np.ndarray, joins) -> float:
    """RMS of the first difference at the window joins over its RMS everywhere: 1 means the joins are as
    smooth as the music; a seam would show as more."""
    d = np.diff(y.astype(np.float64), axis=0)
    at = d[np.asarray(joins) - 1]
    return float(np.sqrt(np.mean(at**2)) / (np.sqrt(np.mean(d**2)) + 1e-12))


def study(weights, songs, threads=None, progress=print) -> dict:
    """Run every candidate pass once per song; return the per-song Gram matrices and the waveform checks."""
    from lightsaft_infer.audio import read_audio
    from lightsaft_infer.evaluate import ideal_ratio_mask
    from lightsaft_infer.mdx import mdx_sdr, reference_stem

    sep = _one_pass_separator(weights, threads)
    trim = sep.plan(0).trim
    order = candidates(sep.config.hop_length, trim)
    sources = sep.sources
    songs_out = []
    for i, song in enumerate(songs):
        mixture, rate = read_audio(os.path.join(song, "mixture.wav"))
        refs = {s: read_audio(reference_stem(song, s))[0] for s in sources}
        outputs = []
        for p in (None,) + tuple(order):
            sep.only = p
            outputs.append(sep.separate(mixture, rate))
        sep.only = None
        plan = sep.plan(len(mixture))
        starts = [s for s in plan.starts() if s < len(mixture)]
        bounds = [(s, min(s + plan.kept, len(mixture))) for s in starts]
        row = {"song": os.path.basename(song), "duration": len(mixture) / rate, "windows": len(bounds),
               "mix/4": {s: mdx_sdr(refs[s], mixture / 4) for s in sources},
               "IRM": {s: mdx_sdr(refs[s], e) for s, e in ideal_ratio_mask(mixture, refs, sep.stft).items()},
               "gram": {}, "gram_windows": {}, "energy_windows": {}, "domain": {}, "join_step": {}}  # fmt: skip
        for s in sources:
            every = [o[s] for o in outputs]
            G, Gw, energy = gram(refs[s], every, bounds)
            row["gram"][s], row["gram_windows"][s], row["energy_windows"][s] = G.tolist(), Gw.tolist(), energy.tolist()
            wave = sum(every) / len(every)
            pair = [outputs[0][s], outputs[1 + order.index(Pass(shift=sep.config.hop_length // 2))][s]]
            row["domain"][s] = {"waveform": mdx_sdr(refs[s], wave),
                                "magnitude": mdx_sdr(refs[s], _magnitude_mean(every, sep.stft)),
                                "waveform, plain + half-hop shift": mdx_sdr(refs[s], sum(pair) / 2),
                                "magnitude, plain + half-hop shift": mdx_sdr(refs[s], _magnitude_mean(pair, sep.stft))}
            mixed = outputs[0][s].copy()  # every other window with all the passes, the rest plain
            for w, (a, b) in enumerate(bounds):
                if w % 2:  # odd windows get every pass
                    mixed[a:b] = wave[a:b]
            joins = [a for a, _ in bounds[1:]]
            row["join_step"][s] = {"plain": _join_step(outputs[0][s], joins), "every pass": _join_step(wave, joins),
                                   "alternating": _join_step(mixed, joins)}  # fmt: skip
        songs_out.append(row)
        plain, all_passes = (np.mean(list(_song_sdr(row, sources, p).values())) for p in ([0], range(len(order) + 1)))
        progress(f"[{i + 1}/{len(songs)}] {row['song']}: plain {plain:.3f} dB, all {len(order)} passes {all_passes:.3f} dB")
    return {"weights": os.fspath(weights or "default"), "sources": list(sources), "hop": sep.config.hop_length,
            "trim": trim, "candidates": [p.name for p in order], "songs": songs_out}


# ---- scoring from a report ---------------------------------------------------------------------------------


def _song_sdr(row, sources, passes) -> dict:
    return {s: sdr_of(np.array(row["gram"][s]), sum(row["energy_windows"][s]), passes) for s in sources}


def score(report: dict, passes) -> dict:
    """Mean MDX SDR per stem and overall of averaging the candidate passes ``passes`` (indices, 0 = plain)."""
    rows = [_song_sdr(r, report["sources"], passes) for r in report["songs"]]
    plain = [_song_sdr(r, report["sources"], [0]) for r in report["songs"]]
    mean = [np.mean(list(r.values())) for r in rows]
    base = [np.mean(list(r.values())) for r in plain]
    return {"per_stem": {s: float(np.mean([r[s] for r in rows])) for s in report["sources"]},
            "mean": float(np.mean(mean)), "gain": float(np.mean(mean) - np.mean(base)),
            "songs_improved": int(sum(m > b + 1e-9 for m, b in zip(mean, base))), "passes": len(passes)}  # fmt: skip


def choose_order(report: dict, steps: int | None = None) -> list:
    """Greedy: each step adds the candidate (index into ``report['candidates']``, 1-based) that raises the
    mean SDR most given the ones before it."""
    chosen = [0]
    left = list(range(1, len(report["candidates"]) + 1))
    for _ in range(min(steps or len(left), len(left))):
        best = max(left, key=lambda c: score(report, chosen + [c])["mean"])
        chosen.append(best)
        left.remove(best)
    return chosen[1:]


def indices(report: dict, names) -> list:
    """Candidate indices of the passes named ``names`` (as ``Pass.name``)."""
    return [1 + report["candidates"].index(n) for n in names]


def partial(report: dict, extra: list, fractions=(0.25, 0.5, 0.75, 1.0)) -> dict:
    """Gain when the passes ``extra`` reach only the first fraction of each song's windows (the guard's case
    when time runs short), against the gain of the whole song: whether a pass is worth starting if it cannot
    finish."""
    out = {}
    for f in fractions:
        gains = []
        for r in report["songs"]:
            n = r["windows"]
            reached = int(round(f * n))
            per = [[0] + extra if w < reached else [0] for w in range(n)]
            g = [sdr_per_window(np.array(r["gram_windows"][s]), sum(r["energy_windows"][s]), per)
                 - sdr_of(np.array(r["gram"][s]), sum(r["energy_windows"][s]), [0]) for s in report["sources"]]
            gains.append(np.mean(g))
        out[f] = float(np.mean(gains))
    return out


def summary(report: dict, order: list) -> dict:
    """Every single pass, the first ``n`` of ``order``, the domain and the join measurements."""
    rows = report["songs"]
    sources = report["sources"]
    out = {"songs": len(rows), "windows": int(sum(r["windows"] for r in rows)),
           "mix/4": {s: float(np.mean([r["mix/4"][s] for r in rows])) for s in sources},
           "IRM": {s: float(np.mean([r["IRM"][s] for r in rows])) for s in sources},
           "plain": score(report, [0]),
           "single": {name: score(report, [0, k]) for k, name in enumerate(report["candidates"], 1)},
           "order": [report["candidates"][k - 1] for k in order],
           "first_n": {n: score(report, [0] + order[:n]) for n in range(1, len(order) + 1)}}  # fmt: skip
    for key in ("domain", "join_step"):
        variants = rows[0][key][sources[0]]
        out[key] = {v: float(np.mean([np.mean([r[key][s][v] for s in sources]) for r in rows])) for v in variants}
    return out


def format_summary(s: dict, title: str) -> str:
    sources = list(s["plain"]["per_stem"])
    head = f"{'variant':>26} {'passes':>6} " + " ".join(f"{x:>7}" for x in sources) + f" {'mean':>7} {'gain':>7} improved"
    lines = [f"{title}: {s['songs']} songs, {s['windows']} windows", head]

    def line(name, r, passes="", gain=True):
        vals = [r["per_stem"][x] for x in sources] if "per_stem" in r else [r[x] for x in sources]
        mean = r.get("mean", float(np.mean(vals)))
        g = f"{r['gain']:+.3f}" if gain and "gain" in r else ""
        imp = f"{r['songs_improved']}/{s['songs']}" if gain and "gain" in r else ""
        lines.append(f"{name:>26} {passes:>6} " + " ".join(f"{v:7.3f}" for v in vals) + f" {mean:7.3f} {g:>7} {imp}")

    line("mix/4", s["mix/4"], gain=False)
    line("IRM", s["IRM"], gain=False)
    line("plain", s["plain"], "1", gain=False)
    for name, r in s["single"].items():
        line(f"+ {name}", r, "2")
    for n, r in s["first_n"].items():
        line(f"order, first {n}", r, str(1 + int(n)))
    lines.append("averaging domain (mean over stems): " + ", ".join(f"{k} {v:.3f}" for k, v in s["domain"].items()))
    lines.append("join step (RMS first difference at joins / everywhere): "
                 + ", ".join(f"{k} {v:.3f}" for k, v in s["join_step"].items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    from lightsaft_infer.evaluate import song_folders

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", nargs="?", help="folder with SPLIT/<song>/{mixture,vocals,drums,bass,other}.wav")
    p.add_argument("--split", default="test")
    p.add_argument("--weights", default=None, help="default: the shipped model")
    p.add_argument("--songs", type=int, default=None, help="only the first N songs (sorted)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="write the run's report here")
    p.add_argument("--choose-on", default=None, help="a report: pick the order greedily on it")
    p.add_argument("--score-on", default=None, help="a report: score that order (and the shipped one) on it")
    p.add_argument("--steps", type=int, default=7, help="passes in the chosen order")
    args = p.parse_args(argv)
    if args.choose_on:
        with open(args.choose_on) as f:
            chosen = json.load(f)
        order = choose_order(chosen, args.steps)
        names = [chosen["candidates"][k - 1] for k in order]
        print(f"order chosen on {args.choose_on}: {', '.join(names)}")
        print(format_summary(summary(chosen, order), args.choose_on))
        result = {"order": names, "chosen_on": summary(chosen, order)}
        if args.score_on:
            with open(args.score_on) as f:
                other = json.load(f)
            on = indices(other, names)
            print(format_summary(summary(other, on), args.score_on))
            result["scored_on"] = summary(other, on)
            result["partial"] = partial(other, on[:1])
            print(f"first pass reaching part of the windows ({args.score_on}): "
                  + ", ".join(f"{f:.0%} {g:+.3f}" for f, g in result["partial"].items()))
        if args.json:
            write_json(result, args.json)
        return 0
    if not args.root:
        p.error("give ROOT (to run) or --choose-on REPORT (to pick an order)")
    songs = song_folders(args.root, args.split)[: args.songs]
    report = study(args.weights, songs, args.threads)
    shipped = [p.name for p in default_order(report["hop"], report["trim"])]
    order = indices(report, [n for n in shipped if n in report["candidates"]])  # "order, first n": the shipped one
    print(format_summary(summary(report, order), f"{args.root} {args.split}"))
    if args.json:
        write_json(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
