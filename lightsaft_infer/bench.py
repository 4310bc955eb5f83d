"""``lightsaft-infer bench``: whole-song timings against the MDX budgets.

For each duration a stereo test song is generated and written to a WAV; then
each path separates it from file to files in a fresh process (so peak RSS is
that path's own): the authors' reference path (one ``torch.stft`` → net →
``torch.istft`` per chunk and per source, batch 1) and :class:`Separator` on
each backend. Reported per song and path: setup, wall time (read + separate +
write), real-time factor, peak RSS, the 240 s and 1.57 × duration budgets and
the margin, and the speed-up over the reference measured in the same run.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import resource
import tempfile
import time

import numpy as np

from .mdx import song_budget


def synth_song(duration: float, sample_rate: int = 44100, seed: int = 0) -> np.ndarray:
    """A deterministic music-like stereo test signal ``(samples, 2)``: bass, chords, kick, hi-hat, a lead."""
    rng = np.random.default_rng(seed)
    n = int(round(duration * sample_rate))
    t = np.arange(n) / sample_rate
    beat = 0.5  # 120 bpm
    song = np.zeros((n, 2), np.float32)
    roots = 55.0 * 2 ** (np.array([0, 5, 7, 3]) / 12)  # A, D, E, C
    bar = (t // (4 * beat)).astype(int) % 4
    root = roots[bar]
    song += (0.25 * np.sin(2 * np.pi * root * t))[:, None].astype(np.float32)  # bass
    chord = sum(np.sin(2 * np.pi * root * 4 * r * t) for r in (1, 1.26, 1.5)) / 3
    song[:, 0] += 0.12 * chord.astype(np.float32)
    song[:, 1] += 0.09 * chord.astype(np.float32)
    phase = t % beat
    song += (0.5 * np.sin(2 * np.pi * 60 * phase) * np.exp(-phase * 30))[:, None].astype(np.float32)  # kick
    hat = (t % (beat / 2)) < 0.03
    song += (0.05 * hat[:, None] * rng.standard_normal((n, 2))).astype(np.float32)  # hi-hat
    note = 440 * 2 ** (rng.integers(0, 12, size=int(duration / beat) + 1) / 12)
    lead = np.sin(2 * np.pi * np.cumsum(note[(t // beat).astype(int)]) / sample_rate + 0.3 * np.sin(2 * np.pi * 5 * t))
    song[:, 0] += 0.08 * lead.astype(np.float32)
    song[:, 1] += 0.12 * lead.astype(np.float32)
    return song


def _measure(kind, weights, song, out_dir, options, queue):
    """Child process: separate ``song`` with ``kind`` and report timings and peak RSS."""
    try:
        start = time.perf_counter()
        stems = {s: os.path.join(out_dir, f"{kind}-{s}.wav") for s in ("vocals", "drums", "bass", "other")}
        if kind == "reference":
            import torch

            from .audio import read_audio, write_stems
            from .network import ConditionedUNet
            from .reference import separate_reference
            from .threads import cpu_threads
            from .weights import load_weights

            torch.set_num_threads(options.get("threads") or cpu_threads())
            config, tensors = load_weights(os.path.splitext(weights)[0] + ".safetensors")
            net = ConditionedUNet.from_tensors(config, tensors)
            setup = time.perf_counter() - start
            t0 = time.perf_counter()
            audio, rate = read_audio(song)
            t1 = time.perf_counter()
            out = separate_reference(net, audio)
            t2 = time.perf_counter()
            write_stems({stems[k]: v for k, v in out.items()}, rate)
            t3 = time.perf_counter()
            timing = {"read": t1 - t0, "separate": t2 - t1, "write": t3 - t2}
        else:
            from .separator import Separator

            sep = Separator.from_file(weights, backend=kind, threads=options.get("threads"),
                                      mode=options["mode"], overlap=options["overlap"])  # fmt: skip
            sep.warm_up()
            setup = time.perf_counter() - start
            r = sep.separate_file(song, stems)
            timing = {"read": r.read, "separate": r.separate, "write": r.write}
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB -> MB on Linux
        queue.put({"ok": True, "setup_s": setup, **{k + "_s": v for k, v in timing.items()}, "peak_rss_mb": peak})
    except Exception as err:  # reported in the table, never fatal for the other paths
        queue.put({"ok": False, "error": f"{type(err).__name__}: {err}"})


def _run_child(kind, weights, song, out_dir, options):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(kind, weights, song, out_dir, options, queue))
    proc.start()
    try:
        result = queue.get()
    finally:
        proc.join()
    return result


def run_bench(weights=None, durations=(60.0, 240.0), backends=("torch", "onnx"), reference=True,
              mode="overlap", overlap=0.125, json_path=None, threads=None, printer=print) -> dict:  # fmt: skip
    """Run the benchmark; print a table and return (and optionally write) the JSON report."""
    from .backends import default_weights, torch_available
    from .threads import cpu_threads

    weights = os.fspath(weights or default_weights())

    options = {"mode": mode, "overlap": overlap, "threads": threads}
    kinds = (["reference"] if reference and torch_available() else []) + list(backends)
    report = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {cpu_threads()} threads granted",
        "weights": weights, "mode": mode, "overlap": overlap, "songs": [],
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="lightsaft-bench-") as tmp:
        import soundfile as sf

        for duration in durations:
            song = os.path.join(tmp, f"song-{duration:g}s.wav")
            sf.write(song, synth_song(duration), 44100, subtype="PCM_16")
            round1, round2 = song_budget(duration)
            entry = {"duration_s": duration, "budget_round1_s": round1, "budget_round2_s": round2, "paths": {}}
            for kind in kinds:
                r = _run_child(kind, weights, song, tmp, options)
                if r["ok"]:
                    r["wall_s"] = r["read_s"] + r["separate_s"] + r["write_s"]
                    r["rtf"] = r["wall_s"] / duration
                    r["margin_s"] = min(round1, round2) - r["wall_s"]
                entry["paths"][kind] = r
            ref = entry["paths"].get("reference", {})
            for kind, r in entry["paths"].items():
                if r["ok"] and ref.get("ok"):
                    r["speedup_vs_reference"] = ref["wall_s"] / r["wall_s"]
            report["songs"].append(entry)
    printer(format_table(report))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=2)
    return report


def format_table(report: dict) -> str:
    lines = [f"{report['date']}  {report['machine']}  mode={report['mode']} overlap={report['overlap']}",
             f"{'song':>7} {'path':>10} {'setup s':>8} {'wall s':>8} {'RTF':>6} {'peak MB':>8} "
             f"{'240 s':>6} {'1.57×d':>7} {'margin s':>9} {'speed-up':>9}"]  # fmt: skip
    for song in report["songs"]:
        for kind, r in song["paths"].items():
            head = f"{song['duration_s']:>6g}s {kind:>10}"
            if not r["ok"]:
                lines.append(f"{head} failed: {r['error']}")
                continue
            speedup = f"{r['speedup_vs_reference']:8.2f}×" if "speedup_vs_reference" in r else f"{'':>9}"
            lines.append(f"{head} {r['setup_s']:8.1f} {r['wall_s']:8.1f} {r['rtf']:6.3f} {r['peak_rss_mb']:8.0f} "
                         f"{song['budget_round1_s']:6.0f} {song['budget_round2_s']:7.1f} {r['margin_s']:9.1f} {speedup}")  # fmt: skip
    return "\n".join(lines)
