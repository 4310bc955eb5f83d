"""Separating a whole library: every audio file under a tree, mirrored under OUT, resumable, on one
process or on a Dask cluster.

``run_batch(["music/"], "out/")`` finds every audio file below ``music/`` and writes
``out/<its path without extension>/<stem>.wav`` (in a folder holding a ``mixture.*``, as in MUSDB18, only
the mixture is a song and it gives its folder's name; two inputs that would share a folder keep their
extensions). Each finished or failed
song is appended to ``out/manifest.jsonl`` (state, timings, the windows each path took, the error), one
fsync'd line at a time, so a rerun skips what is done, retries what failed, and a ``kill -9`` loses at
most the songs in flight. Stems are written all-or-nothing; a run's leftovers of dead processes are
swept at its start and end.

With ``workers`` (a ``LocalCluster`` of that many processes) or ``scheduler`` (``tcp://host:8786``), the
songs are Dask tasks: each worker process loads the model once and writes to the shared OUT path; a
worker that dies mid-song loses only that song, which Dask runs again elsewhere (``retries``). Dask
rather than Ray: it is a pure-Python wheel, its ``LocalCluster`` and ``tcp://`` scheduler are the same
API, and songs are independent tasks that need nothing of Ray's actors or object store.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

from .errors import LightsaftError
from .files import remove_empty, remove_stale_parts

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".opus")
MANIFEST = "manifest.jsonl"
STEM_FORMAT = "wav"


@dataclasses.dataclass(frozen=True)
class Job:
    """One song: ``source`` (absolute path), ``key`` (its path below the input root, ``/``-separated),
    ``folder`` (its output folder below OUT)."""

    source: str
    key: str
    folder: str


def find_jobs(roots, out) -> list[Job]:
    """Every audio file under ``roots`` (files or folders), sorted, each with an output folder of its own."""
    out = os.path.abspath(os.fspath(out))
    found = []  # (source, key)
    roots = [os.path.abspath(os.fspath(r)) for r in roots]
    for root in roots:
        prefix = os.path.basename(root.rstrip(os.sep)) + "/" if len(roots) > 1 else ""
        if os.path.isfile(root):
            found.append((root, os.path.basename(root)))
            continue
        if not os.path.isdir(root):
            raise LightsaftError(root, "no such file or folder")
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and os.path.abspath(os.path.join(folder, d)) != out)
            audio = [n for n in sorted(files) if os.path.splitext(n)[1].lower() in AUDIO_EXTENSIONS and not n.startswith(".")]
            mixtures = [n for n in audio if os.path.splitext(n)[0] == "mixture"]
            for name in mixtures or audio:  # MUSDB layout: beside a mixture, the other files are its stems
                path = os.path.join(folder, name)
                found.append((path, prefix + os.path.relpath(path, root).replace(os.sep, "/")))

    def folder_of(key, keep_extension):
        head, name = os.path.split(key)
        stem, _ = os.path.splitext(name)
        if keep_extension:
            return key
        return head if stem == "mixture" and head else os.path.join(head, stem).replace(os.sep, "/")

    plain = [folder_of(key, False) for _, key in found]
    jobs, taken = [], {}
    for (source, key), folder in zip(found, plain):
        if plain.count(folder) > 1:  # song.wav beside song.flac: both keep their extension
            folder = folder_of(key, True)
        if folder.lower() in taken:
            raise LightsaftError(source, f"would be written to {folder}/, like {taken[folder.lower()]}")
        taken[folder.lower()] = source
        jobs.append(Job(source, key, folder))
    return jobs


class Manifest:
    """``OUT/manifest.jsonl``: one JSON record per finished or failed song; the last one for a song counts."""

    def __init__(self, out):
        self.path = os.path.join(os.fspath(out), MANIFEST)
        self.records: dict = {}
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut by kill -9: that song was in flight
                    if isinstance(record, dict) and "key" in record:
                        self.records[record["key"]] = record

    def append(self, record: dict) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records[record["key"]] = record

    def done(self, job: Job, out, stems) -> bool:
        record = self.records.get(job.key)
        return (record is not None and record.get("state") == "done" and record.get("folder") == job.folder
                and all(os.path.isfile(os.path.join(out, job.folder, f"{s}.{STEM_FORMAT}")) for s in stems))  # fmt: skip


# -- the work of one song, in this process or in a Dask worker --------------------------------------
_SEPARATORS: dict = {}


def _separator(options: dict):
    """One model per process, loaded on first use (Dask workers keep theirs across songs)."""
    key = json.dumps(options, sort_keys=True, default=str)
    if key not in _SEPARATORS:
        from .separator import Separator

        opts = dict(options)
        _SEPARATORS[key] = Separator.from_file(opts.pop("weights", None), backend=opts.pop("backend", "auto"),
                                               threads=opts.pop("threads", None), **opts)  # fmt: skip
    return _SEPARATORS[key]


def separate_job(job: Job, out: str, options: dict, progress=None) -> dict:
    """Separate one song into ``OUT/<job.folder>/``; the manifest record (never raises for bad input)."""
    start = time.perf_counter()
    record = {"key": job.key, "source": job.source, "folder": job.folder, "host": os.uname().nodename,
              "pid": os.getpid(), "finished": None}  # fmt: skip
    try:
        sep = _separator(options)
        paths = {s: os.path.join(out, job.folder, f"{s}.{STEM_FORMAT}") for s in sep.sources}
        result = sep.separate_file(job.source, paths, progress=progress)
        record.update(state="done", duration_s=round(result.duration, 3), seconds=round(result.wall, 3),
                      rtf=round(result.rtf, 4), windows=result.windows, warnings=result.warnings)  # fmt: skip
    except LightsaftError as err:
        record.update(state="failed", error=str(err), seconds=round(time.perf_counter() - start, 3))
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    return record


def _sweep(out, jobs) -> None:
    """Remove what dead processes left in the songs' folders: temporary files, then empty folders."""
    for job in jobs:
        folder = os.path.join(out, job.folder)
        if os.path.isdir(folder):
            remove_stale_parts(folder)
            parts, chain = job.folder.split("/"), []
            for i in range(len(parts), 0, -1):
                chain.append(os.path.join(out, *parts[:i]))
            remove_empty(list(reversed(chain)))


def run_batch(roots, out, options: dict | None = None, workers: int | None = None, scheduler: str | None = None,
              quiet: bool = False, printer=print) -> dict:
    """Separate every song under ``roots`` into ``out``; returns ``{"done", "skipped", "failed", "jobs"}``.

    ``options``: ``weights``, ``backend``, ``threads`` and the :class:`~.separator.Separator` options.
    ``workers`` / ``scheduler``: run on a Dask ``LocalCluster`` of that many processes / on that cluster.
    """
    from .config import SOURCES

    out = os.path.abspath(os.fspath(out))
    options = dict(options or {})
    jobs = find_jobs(roots, out)
    manifest = Manifest(out)
    todo = [j for j in jobs if not manifest.done(j, out, SOURCES)]
    _sweep(out, todo)
    counts = {"done": 0, "skipped": len(jobs) - len(todo), "failed": 0, "jobs": len(jobs)}
    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="song", desc="songs", disable=quiet, position=0)

    def finished(record):
        manifest.append(record)
        counts["done" if record["state"] == "done" else "failed"] += 1
        if record["state"] == "failed":
            bar.write(f"lightsaft-infer: error: {record['error']}")
        for warning in record.get("warnings", ()):
            bar.write(f"lightsaft-infer: warning: {warning}")
        bar.update(1)

    try:
        if workers is None and scheduler is None:
            _run_here(todo, out, options, finished, quiet)
        else:
            _run_dask(todo, out, options, finished, workers, scheduler)
    finally:
        bar.close()
        _sweep(out, todo)  # an interrupted run leaves no partial file and no empty folder
    printer(f"{counts['done']} done, {counts['skipped']} skipped (done before), {counts['failed']} failed "
            f"of {counts['jobs']} songs -> {out}")  # fmt: skip
    return counts


def _run_here(todo, out, options, finished, quiet) -> None:
    from tqdm import tqdm

    for job in todo:
        with tqdm(total=None, unit="window", desc=job.key[-40:], disable=quiet, leave=False, position=1) as bar:

            def progress(done, total):
                bar.total = total
                bar.update(done - bar.n)

            finished(separate_job(job, out, options, progress))


def _run_dask(todo, out, options, finished, workers, scheduler) -> None:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise LightsaftError(None, "--workers / --scheduler need Dask: pip install 'lightsaft-infer[dask]'") from None
    import logging

    from .threads import cpu_threads

    cluster = None
    if scheduler is None:
        workers = max(1, int(workers))
        # one model per worker process; the CPU quota shared among them
        options.setdefault("threads", max(1, cpu_threads() // workers))
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)  # fmt: skip
    client = Client(cluster if cluster is not None else scheduler)
    try:
        futures = [client.submit(separate_job, job, out, options, key=f"song-{i}-{job.key}", retries=2, pure=False)
                   for i, job in enumerate(todo)]  # fmt: skip
        for future in as_completed(futures):
            try:
                finished(future.result())
            except Exception as err:  # a song that killed its workers more often than retries allow
                job = todo[futures.index(future)]
                finished({"key": job.key, "source": job.source, "folder": job.folder, "state": "failed",
                          "error": f"{job.source}: its worker died ({type(err).__name__}: {err})",
                          "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})  # fmt: skip
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
