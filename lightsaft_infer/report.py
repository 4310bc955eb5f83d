"""A listening report for a batch: static HTML to open in any browser, no server, no external assets.

``write_report(OUT)`` reads ``OUT/manifest.jsonl`` and writes

- ``OUT/index.html``: one row per song (time, RTF, the path each window took, MDX SDR where reference
  stems are known), sortable by any column, with the benchmark's plot when a bench JSON is given;
- ``OUT/<song>/index.html``: a player and a spectrogram for the mixture, each stem and each reference
  stem, with their MDX SDR.

Audio is referenced relatively (the mixture and the references are linked or copied into the song's
folder), so OUT can be copied or served as it is. Reference stems are taken from beside the input
mixture when its folder holds them (MUSDB18 layout: ``<song>/mixture.wav`` with ``vocals.wav`` …).
Every page checks that its players and images load and says so in its header
(``data-media="ok N/N"``), which is what the tests read back from headless Chromium.
"""

from __future__ import annotations

import html
import json
import os
import shutil

import numpy as np

from .batch import STEM_FORMAT, Manifest
from .config import SOURCES
from .mdx import mdx_sdr, reference_stem

# Marks every <audio>/<img> as loaded or failed and writes the count into <body data-media="...">.
_CHECK = """<script>
(function(){var items=[].slice.call(document.querySelectorAll('audio,img')),ok=0,bad=0;
function done(){document.body.dataset.media=(bad?'failed ':'ok ')+ok+'/'+items.length;
 var n=document.getElementById('media');if(n&&items.length)n.textContent=bad?(bad+' of '+items.length+' files did not load'):('all '+items.length+' players and images loaded');}
function mark(e,good){if(e.dataset.state)return;e.dataset.state=good?'ok':'error';good?ok++:bad++;if(ok+bad==items.length)done();}
items.forEach(function(e){if(e.tagName=='IMG'){if(e.complete)mark(e,e.naturalWidth>0);else{e.onload=function(){mark(e,true)};e.onerror=function(){mark(e,false)};}}
 else{if(e.readyState>0)mark(e,true);else{e.addEventListener('loadedmetadata',function(){mark(e,true)});e.addEventListener('error',function(){mark(e,false)},true);
 var s=e.querySelector('source');if(s)s.addEventListener('error',function(){mark(e,false)});}}});
if(!items.length)done();})();
</script>"""

# Click a column header to sort by it (numbers numerically).
_SORT = """<script>
document.querySelectorAll('th').forEach(function(th,i){th.style.cursor='pointer';th.onclick=function(){
 var tb=th.closest('table').tBodies[0],rows=[].slice.call(tb.rows),up=th.dataset.up!='1';th.dataset.up=up?'1':'0';
 rows.sort(function(a,b){var x=a.cells[i].dataset.v||a.cells[i].textContent,y=b.cells[i].dataset.v||b.cells[i].textContent;
  var p=parseFloat(x),q=parseFloat(y);var c=(!isNaN(p)&&!isNaN(q))?p-q:x.localeCompare(y);return up?c:-c;});
 rows.forEach(function(r){tb.appendChild(r);});};});
</script>"""

_STYLE = """<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222} table{border-collapse:collapse}
td,th{padding:.3em .7em;border-bottom:1px solid #ddd;text-align:left;vertical-align:middle} th{background:#f4f4f4}
.track{display:grid;grid-template-columns:10em 320px 1fr;gap:.4em 1em;align-items:center;margin:.4em 0}
.track img{width:100%;max-width:640px;height:90px;image-rendering:pixelated;border:1px solid #ccc} .muted{color:#777}
</style>"""


def spectrogram_png(audio: np.ndarray, rate: int, path, n_fft: int = 2048) -> None:
    """A log-magnitude spectrogram of ``audio (samples, channels)`` as a small PNG (no axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = audio.mean(axis=1) if audio.ndim == 2 else audio
    hop = max(n_fft // 4, len(x) // 1200)  # at most ~1200 columns, whatever the length
    frames = max(1, 1 + (len(x) - n_fft) // hop)
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spec = np.abs(np.fft.rfft(x[index] * np.hanning(n_fft), axis=1)).T  # (bins, frames)
    bins = np.unique(np.geomspace(1, spec.shape[0] - 1, 160).astype(int))  # log-frequency rows
    db = 20 * np.log10(spec[bins] + 1e-6)
    plt.imsave(path, np.clip(db, db.max() - 80, None), cmap="magma", origin="lower")


def _link_or_copy(src, dst) -> None:
    if os.path.exists(dst):
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _song_page(out: str, record: dict) -> dict:
    """Write ``OUT/<folder>/index.html``; return the index row's values."""
    import soundfile as sf

    folder = os.path.join(out, record["folder"])
    os.makedirs(os.path.join(folder, "spectrograms"), exist_ok=True)
    source = record["source"]
    ext = os.path.splitext(source)[1].lower() or ".wav"
    tracks = []  # (label, file relative to the song folder, audio)
    if os.path.isfile(source):
        _link_or_copy(source, os.path.join(folder, "mixture" + ext))
        tracks.append(("mixture", "mixture" + ext, sf.read(source, dtype="float32", always_2d=True)))
    refs_dir = os.path.dirname(source) if os.path.splitext(os.path.basename(source))[0] == "mixture" else None
    sdr = {}
    for stem in SOURCES:
        audio = sf.read(os.path.join(folder, f"{stem}.{STEM_FORMAT}"), dtype="float32", always_2d=True)
        tracks.append((stem, f"{stem}.{STEM_FORMAT}", audio))
        ref_path = reference_stem(refs_dir, stem) if refs_dir else None
        if ref_path is not None:
            ref_name = f"reference-{stem}{os.path.splitext(ref_path)[1]}"
            _link_or_copy(ref_path, os.path.join(folder, ref_name))
            ref = sf.read(ref_path, dtype="float32", always_2d=True)
            tracks.append((f"reference {stem}", ref_name, ref))
            if ref[0].shape == audio[0].shape:
                sdr[stem] = mdx_sdr(ref[0], audio[0])
    rows = []
    for label, name, (audio, rate) in tracks:
        png = f"spectrograms/{label.replace(' ', '-')}.png"
        spectrogram_png(audio, rate, os.path.join(folder, png))
        stem = label.split()[-1]
        score = f"MDX SDR {sdr[stem]:.2f} dB" if label in sdr else ""  # on the stem, not on its reference
        rows.append(f'<div class="track"><div><b>{html.escape(label)}</b><br><span class="muted">{score}</span></div>'
                    f'<audio controls preload="metadata" src="{html.escape(name)}"></audio>'
                    f'<img src="{html.escape(png)}" alt="{html.escape(label)} spectrogram"></div>')  # fmt: skip
    mean = float(np.mean(list(sdr.values()))) if len(sdr) == len(SOURCES) else None
    windows = ", ".join(f"{k} {v}" for k, v in (record.get("windows") or {}).items())
    title = html.escape(record["folder"])
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>{_STYLE}"
            f"</head><body><p><a href='{'../' * (record['folder'].count('/') + 1)}index.html'>all songs</a></p>"
            f"<h1>{title}</h1><p>{html.escape(record['key'])}: {record.get('duration_s', 0):.1f} s of audio separated in "
            f"{record.get('seconds', 0):.1f} s (RTF {record.get('rtf', 0):.2f}; windows: {html.escape(windows)})"
            + (f"; mean MDX SDR {mean:.2f} dB" if mean is not None else "")
            + f" · <span id='media' class='muted'></span></p>{''.join(rows)}{_CHECK}</body></html>")  # fmt: skip
    with open(os.path.join(folder, "index.html"), "w", encoding="utf-8") as f:
        f.write(page)
    return {"sdr": sdr, "mean": mean, "windows": windows}


def write_report(out, bench_json=None) -> str:
    """Write the report for the batch in ``out``; return the index page's path."""
    out = os.path.abspath(os.fspath(out))
    records = [r for r in Manifest(out).records.values() if r.get("state") == "done"]
    records.sort(key=lambda r: r["key"])
    rows = []
    for record in records:
        info = _song_page(out, record)
        cells = [(html.escape(record["key"]), record["key"]), (f"{record.get('duration_s', 0):.1f}", record.get("duration_s", 0)),
                 (f"{record.get('seconds', 0):.1f}", record.get("seconds", 0)), (f"{record.get('rtf', 0):.3f}", record.get("rtf", 0)),
                 (html.escape(info["windows"]), info["windows"])]  # fmt: skip
        for stem in SOURCES:
            value = info["sdr"].get(stem)
            cells.append(("–" if value is None else f"{value:.2f}", "" if value is None else value))
        cells.append(("–" if info["mean"] is None else f"{info['mean']:.2f}", "" if info["mean"] is None else info["mean"]))
        first = f"<a href='{html.escape(record['folder'])}/index.html'>{cells[0][0]}</a>"
        tds = [f"<td>{first}</td>"] + [f"<td data-v='{v}'>{c}</td>" for c, v in cells[1:]]
        rows.append("<tr>" + "".join(tds) + "</tr>")
    failed = [r for r in Manifest(out).records.values() if r.get("state") == "failed"]
    plot = ""
    if bench_json:
        from .bench import plot as bench_plot

        with open(bench_json, encoding="utf-8") as f:
            bench_plot(json.load(f), os.path.join(out, "bench.png"))
        plot = "<h2>Benchmark</h2><img src='bench.png' alt='benchmark plot' style='max-width:800px'>"
    head = ["song", "audio s", "time s", "RTF", "windows"] + [f"{s} SDR" for s in SOURCES] + ["mean SDR"]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>lightsaft-infer: {len(records)} songs</title>"
            f"{_STYLE}</head><body><h1>{len(records)} song{'s' * (len(records) != 1)} separated</h1><p class='muted'>"
            f"{len(failed)} failed · click a column to sort · <span id='media'></span></p>"
            f"<table><thead><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr></thead><tbody>{''.join(rows)}</tbody>"
            f"</table>{plot}{_SORT}{_CHECK}</body></html>")  # fmt: skip
    index = os.path.join(out, "index.html")
    with open(index, "w", encoding="utf-8") as f:
        f.write(page)
    return index
