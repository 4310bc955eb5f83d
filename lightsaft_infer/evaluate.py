"""Evaluate a model on a MUSDB18-HQ-layout split, beside two references on the same songs.

For every ``ROOT/SPLIT/<song>/`` holding ``mixture.wav`` and the four stems,
the song is separated by the same :class:`~.separator.Separator` users run,
and per stem two scores are computed for three systems:

- the model;
- ``mix/4``: every stem estimated as the mixture divided by four (the floor);
- ``IRM``: the ideal ratio mask with the model's STFT, ``|S_j| / Σ_k |S_k|``
  applied to the mixture's STFT (an upper bound for a mask with this STFT).

Scores: the MDX challenge SDR (:func:`~.mdx.mdx_sdr`, mean over songs as
on the leaderboard) and, when ``museval`` is installed, BSS-Eval v4 SDR
(median over 1 s frames, then median over songs, as MUSDB18 papers report).
"""

from __future__ import annotations

import json
import os

import numpy as np

from .audio import read_audio
from .errors import AudioError
from .mdx import mdx_sdr, reference_stem
from .stft import STFT

SYSTEMS = ("model", "mix/4", "IRM")


def song_folders(root, split: str) -> list[str]:
    folder = os.path.join(os.fspath(root), split)
    if not os.path.isdir(folder):
        raise AudioError(folder, "no such split folder (expected ROOT/SPLIT/<song>/mixture.wav)")
    songs = sorted(os.path.join(folder, d) for d in os.listdir(folder)
                   if os.path.isfile(os.path.join(folder, d, "mixture.wav")))
    if not songs:
        raise AudioError(folder, "holds no song folders with a mixture.wav")
    return songs


def ideal_ratio_mask(mixture: np.ndarray, stems: dict, stft: STFT) -> dict:
    """Oracle estimates ``{name: (samples, channels)}`` from magnitude ratios of the true stems."""
    n = mixture.shape[0]
    pad = stft.hop - n % stft.hop  # the centred iSTFT returns whole hops: pad, then cut back

    def forward(x):
        return stft.forward(np.pad(x, ((0, pad), (0, 0))).T)  # (channels, T, F)

    spec = {k: forward(v) for k, v in stems.items()}
    total = sum(np.abs(s) for s in spec.values()) + 1e-8
    mix = forward(mixture)
    return {k: stft.inverse(mix * (np.abs(s) / total))[:, :n].T for k, s in spec.items()}


def _museval_metrics():
    """``museval.metrics`` without ``museval/__init__``, which imports musdb → stempeg → ffmpeg."""
    import importlib.util

    spec = importlib.util.find_spec("museval")
    if spec is None:
        return None
    path = os.path.join(spec.submodule_search_locations[0], "metrics.py")
    module_spec = importlib.util.spec_from_file_location("_museval_metrics", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def bss_sdr(references: np.ndarray, estimates: np.ndarray, rate: int):
    """BSS-Eval v4 SDR per stem, ``(S,)``: median over 1 s frames, as museval's ``evaluate`` (``None``
    without museval). ``references``/``estimates``: ``(S, samples, channels)``."""
    metrics = _museval_metrics()
    if metrics is None:
        return None
    sdr = metrics.bss_eval(references, estimates, window=rate, hop=rate)[0]  # (S, frames)
    return [float(np.nanmedian(row)) for row in sdr]


def evaluate(separator, root, split: str = "test", limit: int | None = None, bss: bool = True,
             progress=None, bss_songs: int | None = None) -> dict:
    """Scores per song and summary per system and stem; see the module docstring.

    ``bss_songs`` limits BSS-Eval (slow: about a second of CPU per second of audio and
    system) to the first N songs; MDX SDR is computed on all."""
    songs = song_folders(root, split)[:limit]
    stft = STFT(separator.config.n_fft, separator.config.hop_length)
    per_song = []
    for i, song in enumerate(songs):
        mixture, rate = read_audio(os.path.join(song, "mixture.wav"))
        refs = {}
        for s in separator.sources:
            path = reference_stem(song, s)
            if path is None:
                raise AudioError(os.path.join(song, f"{s}.wav"), "no such reference stem (.wav or .flac)")
            refs[s] = read_audio(path)[0]
        estimates = {
            "model": separator.separate(mixture, rate),
            "mix/4": {s: mixture / 4 for s in separator.sources},
            "IRM": ideal_ratio_mask(mixture, refs, stft),
        }
        row = {"song": os.path.basename(song), "duration": mixture.shape[0] / rate}
        ref = np.stack([refs[s] for s in separator.sources])
        for system, est in estimates.items():
            use_bss = bss and (bss_songs is None or i < bss_songs)
            bss_scores = bss_sdr(ref, np.stack([est[s] for s in separator.sources]), rate) if use_bss else None
            row[system] = {s: {"mdx": mdx_sdr(refs[s], est[s]), "bss": None if bss_scores is None else bss_scores[j]}
                           for j, s in enumerate(separator.sources)}
        per_song.append(row)
        if progress is not None:
            progress(i + 1, len(songs))
    return {"split": split, "songs": len(per_song), "per_song": per_song, "summary": summarise(per_song, separator.sources)}


def summarise(per_song: list, sources) -> dict:
    """``{system: {stem: {"mdx": mean over songs, "bss": median over songs}}}`` plus each system's mean."""
    out = {}
    for system in SYSTEMS:
        out[system] = {}
        for s in sources:
            mdx = [r[system][s]["mdx"] for r in per_song]
            bss = [r[system][s].get("bss") for r in per_song]
            bss = [b for b in bss if b is not None and np.isfinite(b)]
            out[system][s] = {"mdx": float(np.mean(mdx)), "bss": float(np.median(bss)) if bss else None}
        out[system]["mean"] = {
            "mdx": float(np.mean([out[system][s]["mdx"] for s in sources])),
            "bss": (float(np.mean([out[system][s]["bss"] for s in sources]))
                    if all(out[system][s]["bss"] is not None for s in sources) else None),
        }
    return out


def format_table(report: dict, sources) -> str:
    """A Markdown table: one row per system and metric, one column per stem."""
    cols = list(sources) + ["mean"]
    lines = ["| system | metric | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for system in SYSTEMS:
        for metric, label in (("mdx", "MDX SDR (mean)"), ("bss", "BSS-Eval v4 SDR (median)")):
            vals = [report["summary"][system][c][metric] for c in cols]
            if all(v is None for v in vals):
                continue
            lines.append(f"| {system} | {label} | " + " | ".join("–" if v is None else f"{v:.2f}" for v in vals) + " |")
    return "\n".join(lines)


def compare(report: dict, baseline: dict, sources) -> dict:
    """Per-source change of the model's mean MDX SDR against ``baseline`` (an earlier report of the same
    songs, e.g. the exact path's), with the largest per-song change: ``{source: (mean Δ, max |Δ|)}``."""
    theirs = {s["song"]: s for s in baseline["per_song"]}
    mine = [s for s in report["per_song"] if s["song"] in theirs]
    if len(mine) != len(report["per_song"]) or not mine:
        raise ValueError("the baseline report does not hold the same songs")
    def score(song, k):
        return float(np.mean([song["model"][x]["mdx"] for x in sources])) if k == "mean" else song["model"][k]["mdx"]

    out = {}
    for source in list(sources) + ["mean"]:
        deltas = [score(s, source) - score(theirs[s["song"]], source) for s in mine]
        out[source] = (float(np.mean(deltas)), float(np.max(np.abs(deltas))))
    return out


def write_json(report: dict, path) -> None:
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
