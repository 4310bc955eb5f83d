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
import stat
import sys
from urllib.parse import quote

import numpy as np

from .audio import audio_info
from .batch import MANIFEST, STEM_FORMAT, Manifest, input_identity
from .config import SOURCES
from .errors import LightsaftError
from .files import atomic_path, publish
from .mdx import reference_stem

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
.track img{width:100%;max-width:640px;height:90px;image-rendering:pixelated;border:1px solid #ccc} .muted{color:#777} .bad{color:#b00}
</style>"""


#: Frames per block when levels and SDR are summed over a file: memory stays flat for any length.
BLOCK = 1 << 18
#: Columns of a spectrogram image, whatever the song's length.
COLUMNS = 1200


def _attr(value) -> str:
    """Text for HTML text or a quoted attribute value (quotes escaped too). A file name that is not UTF-8
    (its bytes kept as surrogates) shows its undecodable bytes as U+FFFD instead of failing the page."""
    return html.escape(str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace"), quote=True)


def _href(*parts) -> str:
    """A relative URL of path ``parts``, percent-encoded (``#``, ``?``, ``%`` in names; a name's raw bytes where
    it is not UTF-8), escaped for an attribute."""
    return _attr("/".join(quote(os.fsencode(p), safe="") for part in parts for p in str(part).split("/")))


def _regular(path) -> bool:
    """Whether ``path`` is (or links to) a regular file: a FIFO would hang a copy, ``/dev/zero`` never end it."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _real_folder(out: str, path: str) -> bool:
    """Whether ``path`` is a folder of its own inside OUT: not a symbolic link, not resolving outside OUT."""
    real_out = os.path.realpath(out)
    return (not os.path.islink(path) and os.path.isdir(path)
            and os.path.commonpath([os.path.realpath(path), real_out]) == real_out)


def _publish_new(target, write, suffix: str = "") -> None:
    """``write(tmp)`` into a fresh file beside ``target``, then rename it over ``target``: a link planted at
    ``target`` is replaced, never written through."""
    tmp = atomic_path(target, suffix)
    try:
        write(tmp)
        publish(tmp, target)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def spectrogram_png(path, out_png, n_fft: int = 2048) -> None:
    """:func:`_spectrogram` written through a fresh file (never through a link planted at ``out_png``)."""
    _publish_new(out_png, lambda tmp: _spectrogram(path, tmp, n_fft), ".png")


def _spectrogram(path, out_png, n_fft: int = 2048) -> None:
    """A log-magnitude spectrogram of the audio file ``path`` as a small PNG (no axes), read one column's
    samples at a time: at most ``COLUMNS`` columns and flat memory for any length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import soundfile as sf

    with sf.SoundFile(os.fsencode(path)) as f:
        n = f.frames
        hop = max(n_fft // 4, -(-n // COLUMNS))
        columns = max(1, 1 + (n - n_fft) // hop) if n >= n_fft else 1
        window = np.hanning(n_fft)
        spec = np.empty((n_fft // 2 + 1, columns), np.float32)
        for c in range(columns):
            f.seek(c * hop)
            x = f.read(n_fft, dtype="float32", always_2d=True).mean(axis=1)
            spec[:, c] = np.abs(np.fft.rfft(np.pad(x, (0, n_fft - len(x))) * window))
    bins = np.unique(np.geomspace(1, spec.shape[0] - 1, 160).astype(int))  # log-frequency rows
    db = 20 * np.log10(spec[bins] + 1e-6)
    plt.imsave(out_png, np.clip(db, db.max() - 80, None), cmap="magma", origin="lower")


def file_sdr(reference, estimate) -> float:
    """The challenge's SDR between two files of one length, summed block by block (flat memory)."""
    import soundfile as sf

    num = den = 0.0
    with sf.SoundFile(os.fsencode(reference)) as r, sf.SoundFile(os.fsencode(estimate)) as e:
        while True:
            s, s_hat = r.read(BLOCK, dtype="float64", always_2d=True), e.read(BLOCK, dtype="float64", always_2d=True)
            if not len(s):
                break
            num += float(np.sum(s**2))
            den += float(np.sum((s - s_hat) ** 2))
    return float(10.0 * np.log10((num + 1e-7) / (den + 1e-7)))


def _link_or_copy(src, dst) -> bool:
    """Put the regular file ``src`` at ``dst`` (a hard link, else a copy), through a fresh file; False when
    ``src`` is no regular file (a FIFO, a device, a link to one)."""
    if not _regular(src):
        return False
    if not os.path.islink(dst) and os.path.isfile(dst) and os.path.getsize(dst) == os.path.getsize(src):
        return True

    def put(tmp):
        os.unlink(tmp)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)

    _publish_new(dst, put, os.path.splitext(dst)[1])
    return True


def song_folder(out: str, record: dict) -> str | None:
    """``OUT/<folder>`` for a manifest record, or None when the record points anywhere but a folder inside OUT
    (an absolute path, ``..``, a symlink out): the report writes only below its output folder."""
    folder = record["folder"]
    parts = folder.replace("\\", "/").split("/")
    if not folder or os.path.isabs(folder) or any(p in ("", ".", "..") for p in parts):
        return None
    path = os.path.join(out, *parts)
    real_out = os.path.realpath(out)
    if os.path.commonpath([os.path.realpath(path), real_out]) != real_out:
        return None
    return path


def _mixture(record: dict):
    """The input the batch read, if it is still that file: a regular audio file of the recorded size and time.
    A hand-edited ``source`` (``/etc/passwd``) is never linked in."""
    source = record.get("source")
    if not isinstance(source, str):
        return None
    try:
        if {k: record.get(k) for k in ("input_size", "input_mtime_ns")} != input_identity(source):
            return None
        return source, audio_info(source)
    except (OSError, LightsaftError):
        return None


def _song_page(out: str, folder: str, record: dict) -> dict:
    """Write ``OUT/<folder>/index.html``; return the index row's values (``missing``: stems not usable), or
    None when the folder or its ``spectrograms`` is not a folder of OUT's own (a planted link)."""
    spectrograms = os.path.join(folder, "spectrograms")
    if not os.path.lexists(spectrograms):
        os.makedirs(spectrograms, exist_ok=True)
    if not _real_folder(out, folder) or not _real_folder(out, spectrograms):
        return None
    tracks, missing, sdr = [], [], {}  # tracks: (label, file name in the song folder, its path)
    mixture = _mixture(record)
    if mixture is not None:
        source, info = mixture
        name = "mixture" + (os.path.splitext(source)[1].lower() or ".wav")
        if _link_or_copy(source, os.path.join(folder, name)):
            tracks.append(("mixture", name, source))
    frames = mixture[1].frames if mixture is not None else None
    refs_dir = os.path.dirname(mixture[0]) if mixture and os.path.splitext(os.path.basename(mixture[0]))[0] == "mixture" else None
    for stem in SOURCES:
        name = f"{stem}.{STEM_FORMAT}"
        path = os.path.join(folder, name)
        try:
            length = audio_info(path).frames
        except LightsaftError:
            missing.append(f"{stem} missing or unreadable")
            continue
        if frames is not None and length != frames:
            missing.append(f"{stem} is {length} samples, the mixture {frames}")
            continue
        tracks.append((stem, name, path))
        ref_path = reference_stem(refs_dir, stem) if refs_dir else None
        if ref_path is not None:
            try:
                ref_frames = audio_info(ref_path).frames  # a FIFO or a device is refused here, never opened
            except LightsaftError:
                missing.append(f"reference {stem} is not a readable audio file")
                continue
            ref_name = f"reference-{stem}{os.path.splitext(ref_path)[1]}"
            if not _link_or_copy(ref_path, os.path.join(folder, ref_name)):
                continue
            tracks.append((f"reference {stem}", ref_name, ref_path))
            if ref_frames == length:
                sdr[stem] = file_sdr(ref_path, path)
    rows = []
    for label, name, path in tracks:
        png = f"spectrograms/{label.replace(' ', '-')}.png"
        spectrogram_png(path, os.path.join(folder, png))
        stem = label.split()[-1]
        score = f"MDX SDR {sdr[stem]:.2f} dB" if label in sdr else ""  # on the stem, not on its reference
        rows.append(f'<div class="track"><div><b>{_attr(label)}</b><br><span class="muted">{score}</span></div>'
                    f'<audio controls preload="metadata" src="{_href(name)}"></audio>'
                    f'<img src="{_href(png)}" alt="{_attr(label)} spectrogram"></div>')  # fmt: skip
    mean = float(np.mean(list(sdr.values()))) if len(sdr) == len(SOURCES) else None
    windows = _windows(record)
    title = _attr(record["folder"])
    incomplete = f"<p class='bad'>incomplete: {_attr('; '.join(missing))}</p>" if missing else ""
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>{_STYLE}"
            f"</head><body><p><a href='{'../' * (record['folder'].count('/') + 1)}index.html'>all songs</a></p>"
            f"<h1>{title}</h1><p>{_attr(record['key'])}: {_number(record, 'duration_s'):.1f} s of audio separated in "
            f"{_number(record, 'seconds'):.1f} s (RTF {_number(record, 'rtf'):.2f}; windows: {_attr(windows)})"
            + (f"; mean MDX SDR {mean:.2f} dB" if mean is not None else "")
            + f" · <span id='media' class='muted'></span></p>{incomplete}{''.join(rows)}{_CHECK}</body></html>")  # fmt: skip
    _write_page(os.path.join(folder, "index.html"), page)
    return {"sdr": sdr, "mean": mean, "windows": windows, "missing": missing}


def _write_page(path, page: str) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8", errors="replace") as f:
            f.write(page)

    _publish_new(path, write, ".html")


def _number(record: dict, key: str) -> float:
    value = record.get(key)
    return float(value) if isinstance(value, (int, float)) and np.isfinite(value) else 0.0


def _windows(record: dict) -> str:
    windows = record.get("windows")
    if not isinstance(windows, dict):
        return ""
    return ", ".join(f"{k} {v}" for k, v in windows.items())


def write_report(out, bench_json=None, warn=None) -> str:
    """Write the report for the batch in ``out``; return the index page's path. ``warn`` gets one line per
    song that could not be shown whole (and per damaged manifest line); default: stderr."""
    warn = warn or (lambda line: print(f"lightsaft-infer: warning: {line}", file=sys.stderr))
    out = os.path.abspath(os.fspath(out))
    if not os.path.isdir(out):
        raise LightsaftError(out, "no such folder")
    manifest = Manifest(out)
    if not os.path.isfile(manifest.path):
        raise LightsaftError(out, f"holds no {MANIFEST}: not a batch's output folder (run lightsaft-infer batch first)")
    for line in manifest.warnings:
        warn(line)
    records = sorted((r for r in manifest.records.values() if r.get("state") == "done"), key=lambda r: r["key"])
    rows, shown = [], 0
    for record in records:
        folder = song_folder(out, record)
        if folder is None:
            warn(f"{manifest.path}: {record['key']}: its folder {record['folder']!r} is outside {out}; not shown")
            continue
        info = _song_page(out, folder, record)
        if info is None:
            warn(f"{folder}: it or its spectrograms folder is a symbolic link or not a folder inside {out}; not shown")
            continue
        shown += 1
        if info["missing"]:
            warn(f"{folder}: incomplete: {'; '.join(info['missing'])}")
        cells = [(f"{_number(record, 'duration_s'):.1f}", _number(record, "duration_s")),
                 (f"{_number(record, 'seconds'):.1f}", _number(record, "seconds")),
                 (f"{_number(record, 'rtf'):.3f}", _number(record, "rtf")), (info["windows"], info["windows"])]  # fmt: skip
        for stem in SOURCES:
            value = info["sdr"].get(stem)
            cells.append(("–" if value is None else f"{value:.2f}", "" if value is None else value))
        cells.append(("–" if info["mean"] is None else f"{info['mean']:.2f}", "" if info["mean"] is None else info["mean"]))
        state = f" <span class='bad'>(incomplete: {_attr('; '.join(info['missing']))})</span>" if info["missing"] else ""
        first = f"<a href='{_href(record['folder'], 'index.html')}'>{_attr(record['key'])}</a>{state}"
        tds = [f"<td data-v='{_attr(record['key'])}'>{first}</td>"] + [f"<td data-v='{_attr(v)}'>{_attr(c)}</td>" for c, v in cells]
        rows.append("<tr>" + "".join(tds) + "</tr>")
    failed = [r for r in manifest.records.values() if r.get("state") == "failed"]
    plot = ""
    if bench_json:
        from .bench import plot as bench_plot

        with open(bench_json, encoding="utf-8") as f:
            report = json.load(f)
        _publish_new(os.path.join(out, "bench.png"), lambda tmp: bench_plot(report, tmp), ".png")
        plot = "<h2>Benchmark</h2><img src='bench.png' alt='benchmark plot' style='max-width:800px'>"
    head = ["song", "audio s", "time s", "RTF", "windows"] + [f"{s} SDR" for s in SOURCES] + ["mean SDR"]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>lightsaft-infer: {shown} songs</title>"
            f"{_STYLE}</head><body><h1>{shown} song{'s' * (shown != 1)} separated</h1><p class='muted'>"
            f"{len(failed)} failed · click a column to sort · <span id='media'></span></p>"
            f"<table><thead><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr></thead><tbody>{''.join(rows)}</tbody>"
            f"</table>{plot}{_SORT}{_CHECK}</body></html>")  # fmt: skip
    index = os.path.join(out, "index.html")
    _write_page(index, page)
    return index
