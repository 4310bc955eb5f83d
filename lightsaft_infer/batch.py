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
import hashlib
import json
import os
import stat
import sys
import time

from .config import SOURCES
from .errors import LightsaftError
from .files import _alive, check_writable, remove_empty, remove_stale_parts, write_problem

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".opus")
MANIFEST = "manifest.jsonl"
STEM_FORMAT = "wav"


@dataclasses.dataclass(frozen=True)
class Job:
    """One song: ``source`` (absolute path), ``key`` (its path below the input root, ``/``-separated),
    ``folder`` (its output folder below OUT); ``error``: why it is refused without being read."""

    source: str
    key: str
    folder: str
    error: str | None = None


def _identity(path):
    """``(device, inode)`` of an existing path (symlinks followed), else None: a folder by identity, not spelling."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def find_jobs(roots, out, warnings: list | None = None) -> list[Job]:
    """Every audio file under ``roots`` (files or folders), sorted, each with an output folder of its own.

    The output folder is never entered, however it is reached (recognised by device and inode). Two files
    whose output folders differ only in case are both refused (on a case-insensitive disk they would share
    one); folders that cannot be read are named in ``warnings``."""
    out = os.path.abspath(os.fspath(out))
    out_id = _identity(out)
    # Song folders written before (the manifest's): when the output lies inside the tree they hold stems,
    # not songs, whatever the path that reaches them.
    written = {r["folder"] for r in Manifest(out).records.values()} if out_id is not None else set()
    warnings = [] if warnings is None else warnings
    found = []  # (source, key)
    roots = [os.path.abspath(os.fspath(r)) for r in roots]

    def unreadable(err):
        warnings.append(f"{err.filename}: folder not read ({(err.strerror or str(err)).lower()}); its songs are not in this run")

    for root in roots:
        prefix = os.path.basename(root.rstrip(os.sep)) + "/" if len(roots) > 1 else ""
        if os.path.isfile(root):
            found.append((root, os.path.basename(root)))
            continue
        if not os.path.isdir(root):
            raise LightsaftError(root, "no such file or folder")
        below_out = {root: "" if out_id is not None and _identity(root) == out_id else None}
        for folder, dirs, files in os.walk(root, onerror=unreadable):
            keep = []
            for d in sorted(dirs):
                path, rel = os.path.join(folder, d), below_out.get(folder)
                rel = None if rel is None else f"{rel}{d}"
                if d.startswith(".") or rel in written:
                    continue  # hidden, or a song folder this batch wrote (the output is inside the tree)
                if out_id is not None and _identity(path) == out_id:
                    continue  # the output folder below the input, however it is reached: never entered
                below_out[path] = None if rel is None else f"{rel}/"
                keep.append(d)
            dirs[:] = keep
            if below_out.get(folder) is not None and all(f"{s}.{STEM_FORMAT}" in files for s in SOURCES):
                # a separated song's folder below OUT (its stems, the report's copies), manifest or not
                dirs[:] = [d for d in dirs if d != "spectrograms"]
                continue
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
    folders = [folder_of(key, True) if plain.count(folder) > 1 else folder  # song.wav beside song.flac
               for (_, key), folder in zip(found, plain)]  # fmt: skip
    by_case: dict = {}
    for (source, _), folder in zip(found, folders):
        by_case.setdefault(folder.lower(), []).append(source)
    jobs = []
    for (source, key), folder in zip(found, folders):
        alike = [other for other in by_case[folder.lower()] if other != source]
        error = f"{source}: would be written to {folder}/, like {alike[0]} (names differing only in case)" if alike else None
        jobs.append(Job(source, key, folder, error))
    return jobs


def input_identity(path) -> dict:
    """What tells a changed input from the one separated: size and modification time."""
    st = os.stat(path)
    return {"input_size": st.st_size, "input_mtime_ns": st.st_mtime_ns}


class Manifest:
    """``OUT/manifest.jsonl``: one JSON record per finished or failed song; the last one for a song counts.

    Damaged lines (cut by a power loss, edited by hand, not UTF-8) are skipped and named in ``warnings``;
    they never stop a run or a report."""

    def __init__(self, out):
        self.path = os.path.join(os.fspath(out), MANIFEST)
        self.records: dict = {}
        self.warnings: list[str] = []
        self.reload()

    def check(self) -> bool:
        """Whether the manifest exists; a :class:`LightsaftError` when it is anything but a regular file (a FIFO
        would hang every read and append, a link would write outside OUT)."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return False
        except OSError as err:
            raise LightsaftError(self.path, f"cannot be read ({(err.strerror or str(err)).lower()})") from None
        if not stat.S_ISREG(st.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "a FIFO, device or folder"
            raise LightsaftError(self.path, f"is {kind}, not a regular file; a batch's manifest is a plain file "
                                            "(move it away to start the manifest anew)")
        return True

    def reload(self) -> None:
        self.records, self.warnings = {}, []
        if not self.check():
            return
        try:
            with open(self.path, "rb") as f:
                lines = f.read().split(b"\n")
        except FileNotFoundError:
            return
        except OSError as err:
            raise LightsaftError(self.path, f"cannot be read ({(err.strerror or str(err)).lower()})") from None
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            problem = None
            try:
                record = json.loads(raw.decode("utf-8"))
                problem = _record_problem(record)
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                problem = "not a JSON record (cut or damaged)"
            if problem:
                self.warnings.append(f"{self.path}: line {number} skipped: {problem}")
                continue
            self.records[record["key"]] = record

    def append(self, record: dict) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.check()
        with open(self.path, "ab+") as f:
            cut = False
            if f.seek(0, os.SEEK_END):  # a line cut by a power loss must not swallow this record
                f.seek(-1, os.SEEK_END)
                cut = f.read(1) != b"\n"
            # one write per record: appends of concurrent runs never interleave within a line
            f.write(b"\n" * cut + json.dumps(record, sort_keys=True).encode("utf-8") + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self.records[record["key"]] = record

    def done(self, job: Job, out, stems) -> bool:
        """The song's last record is ``done`` for this very input, and its stems are all there, whole."""
        record = self.records.get(job.key)
        if record is None or record.get("state") != "done" or record.get("folder") != job.folder:
            return False
        try:
            if {k: record.get(k) for k in ("input_size", "input_mtime_ns")} != input_identity(job.source):
                return False  # the input changed since (or the record predates this check)
            from .audio import audio_info

            frames = audio_info(job.source).frames
            return all(audio_info(os.path.join(out, job.folder, f"{s}.{STEM_FORMAT}")).frames == frames for s in stems)
        except (OSError, LightsaftError):
            return False  # a stem missing, unreadable or cut


#: Types of the record fields that are read back; anything else in a line makes it damaged.
_FIELDS = {"key": str, "folder": str, "source": str, "state": str}


def _record_problem(record) -> str | None:
    if not isinstance(record, dict):
        return "not a JSON object"
    for name, kind in _FIELDS.items():
        if not isinstance(record.get(name), kind):
            return f"field {name!r} missing or not a {kind.__name__}"
    if record["state"] not in ("done", "failed"):
        return f"unknown state {record['state'][:40]!r}"
    return None


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


CLAIMS = ".claims"
#: A claim from another host older than this is taken to be a dead run's (a song takes minutes, not hours).
CLAIM_STALE_S = 6 * 3600
HOST = os.uname().nodename


def _claim_path(out, job: Job) -> str:
    return os.path.join(out, CLAIMS, hashlib.sha1(job.key.encode("utf-8", "surrogateescape")).hexdigest())


def _claim_stale(path) -> bool:
    try:
        age = time.time() - os.stat(path).st_mtime
    except OSError:  # gone since, or not ours to see
        return True
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            holder = json.loads(f.read(4096))
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        holder = None
    if not isinstance(holder, dict) or not isinstance(holder.get("pid"), int):
        return age > 60  # being written just now, or damaged
    if holder.get("host") == HOST:
        return not _alive(holder["pid"])
    return age > CLAIM_STALE_S


def claim(out, job: Job) -> bool:
    """Take the song for this process (``OUT/.claims/<hash of its key>``, created exclusively), or False when
    a live process holds it: two runs on one output, on one machine or several, never separate a song twice."""
    path = _claim_path(out, job)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError as err:
        raise LightsaftError(os.path.dirname(path), write_problem(err, path)) from None
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _claim_stale(path):
                return False
            try:
                os.unlink(path)  # a dead run's claim
            except FileNotFoundError:
                pass
            continue
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps({"host": HOST, "pid": os.getpid(), "key": job.key}))
        except OSError as err:  # a full disk: no empty claim may stay to make the next run skip the song
            try:
                os.unlink(path)
            except OSError:
                pass
            raise LightsaftError(path, f"the song's claim {write_problem(err, path)}") from None
        return True
    return False


def release(out, job: Job) -> None:
    try:
        os.unlink(_claim_path(out, job))
    except FileNotFoundError:
        pass


def separate_job(job: Job, out: str, options: dict, progress=None) -> dict:
    """Separate one song into ``OUT/<job.folder>/`` unless another run holds it or has done it; append its
    record to the manifest and return it (``state`` ``busy`` / ``skipped``: nothing was done or written).
    Never raises for bad input."""
    from .config import SOURCES

    start = time.perf_counter()
    record = {"key": job.key, "source": job.source, "folder": job.folder, "host": HOST,
              "pid": os.getpid(), "finished": None}  # fmt: skip
    if not claim(out, job):
        return {**record, "state": "busy"}
    try:
        manifest = Manifest(out)  # read now: another run may have finished the song since this one started
        if manifest.done(job, out, SOURCES):
            return {**record, "state": "skipped"}
        try:
            identity = input_identity(job.source)
            sep = _separator(options)
            paths = {s: os.path.join(out, job.folder, f"{s}.{STEM_FORMAT}") for s in sep.sources}
            result = sep.separate_file(job.source, paths, progress=progress)
            record.update(state="done", duration_s=round(result.duration, 3), seconds=round(result.wall, 3),
                          rtf=round(result.rtf, 4), windows=result.windows, warnings=result.warnings,
                          **identity)  # fmt: skip
        except LightsaftError as err:
            record.update(state="failed", error=str(err), seconds=round(time.perf_counter() - start, 3))
        except OSError as err:
            record.update(state="failed", error=f"{job.source}: cannot be read ({(err.strerror or str(err)).lower()})",
                          seconds=round(time.perf_counter() - start, 3))  # fmt: skip
        record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        manifest.append(record)  # before the claim goes: no gap in which another run could take the song
        return record
    finally:
        release(out, job)


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
    warnings: list = []
    jobs = find_jobs(roots, out, warnings)
    try:
        check_writable(out)
    except OSError as err:
        raise LightsaftError(out, f"cannot be written ({(err.strerror or str(err)).lower()}); the output folder "
                                  "must be writable by this user") from None
    manifest = Manifest(out)
    for warning in warnings + manifest.warnings:
        print(f"lightsaft-infer: warning: {warning}", file=sys.stderr)
    refused = [j for j in jobs if j.error]
    todo = [j for j in jobs if not j.error and not manifest.done(j, out, SOURCES)]
    _sweep(out, todo)
    counts = {"done": 0, "skipped": len(jobs) - len(todo) - len(refused), "failed": 0, "busy": 0, "jobs": len(jobs),
              "not read": len(warnings)}  # fmt: skip
    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="song", desc="songs", disable=quiet, position=0)

    def finished(record):
        state = record["state"]
        counts[{"done": "done", "busy": "busy", "skipped": "skipped"}.get(state, "failed")] += 1
        if state == "failed":
            bar.write(f"lightsaft-infer: error: {record['error']}", file=sys.stderr)  # not stdout, tqdm's default
        for warning in record.get("warnings", ()):
            bar.write(f"lightsaft-infer: warning: {warning}", file=sys.stderr)
        bar.update(1)

    for job in refused:  # names that would collide: those two refused, the rest of the batch goes on
        record = {"key": job.key, "source": job.source, "folder": job.folder, "state": "failed", "error": job.error,
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
        manifest.append(record)
        counts["failed"] += 1
        print(f"lightsaft-infer: error: {job.error}", file=sys.stderr)

    try:
        if workers is None and scheduler is None:
            _run_here(todo, out, options, finished, quiet)
        else:
            _run_dask(todo, out, options, finished, workers, scheduler)
    finally:
        bar.close()
        _sweep(out, todo)  # an interrupted run leaves no partial file and no empty folder
    busy = f", {counts['busy']} in progress in another run" if counts["busy"] else ""
    unread = f"; {counts['not read']} folder{'s' * (counts['not read'] != 1)} not read" if counts["not read"] else ""
    printer(f"{counts['done']} done, {counts['skipped']} skipped (done before), {counts['failed']} failed{busy} "
            f"of {counts['jobs']} songs -> {out}{unread}")  # fmt: skip
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
                record = {"key": job.key, "source": job.source, "folder": job.folder, "state": "failed",
                          "error": f"{job.source}: its worker died ({type(err).__name__}: {err})",
                          "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
                Manifest(out).append(record)
                finished(record)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
