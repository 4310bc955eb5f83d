"""The authors' networks by name: pull (download, verify, convert, export) into a cache, and find them there.

Cache layout under ``$LIGHTSAFT_HOME`` (default ``$XDG_CACHE_HOME/lightsaft-infer``, else
``~/.cache/lightsaft-infer``)::

    models/NAME/NAME.safetensors, NAME.onnx, provenance.json (and config.yaml for v2-code networks)
    downloads/NAME-<digest>.part     a download in progress, kept for resuming; never loaded unverified
    locks/NAME.lock                  one pull of a name at a time

A model folder appears whole or not at all: it is built in a staging folder beside it and renamed
into place. Nothing in the cache is followed through a symbolic link, and the checkpoint's bytes are
checked against the catalogue before the (pickle-free) converter reads them.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import pathlib
import re
import shutil
import tempfile

from . import catalogue as cat
from .download import DownloadError, fetch, stall_seconds
from .errors import LightsaftError, WeightFileError
from .files import _alive, publish, write_problem

HOME_ENV = "LIGHTSAFT_HOME"
PROVENANCE = "provenance.json"
WEIGHT_SUFFIXES = (".safetensors", ".onnx")
_STAGING = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.(staging|trash)$")


class CacheError(LightsaftError):
    """The model cache cannot be used (a symbolic link, unwritable, full)."""


def cache_home() -> pathlib.Path:
    env = os.environ.get(HOME_ENV)
    if env:
        return pathlib.Path(env).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(xdg) if xdg and os.path.isabs(xdg) else pathlib.Path.home() / ".cache"
    return (base / "lightsaft-infer").absolute()


def _folder(path: pathlib.Path, create: bool) -> pathlib.Path:
    """``path`` as a real folder of the cache: never a symbolic link, made when ``create``."""
    if path.is_symlink():
        raise CacheError(path, "is a symbolic link; the model cache follows none (remove it, or set "
                               f"{HOME_ENV} to a real folder)")
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CacheError(path, f"cannot be created ({err.strerror or err}); set {HOME_ENV} to a writable folder") from None
    if path.exists() and not path.is_dir():
        raise CacheError(path, "is not a folder")
    return path


def model_dir(name: str, home=None) -> pathlib.Path:
    return pathlib.Path(home or cache_home()) / "models" / name


def cached(name: str, home=None) -> pathlib.Path | None:
    """The ONNX file of a pulled model, or None. A folder or file planted as a symbolic link is refused."""
    home = pathlib.Path(home or cache_home())
    for d in (home, home / "models"):
        if d.is_symlink():
            raise CacheError(d, "is a symbolic link; the model cache follows none")
    folder = model_dir(name, home)
    if not folder.exists() and not folder.is_symlink():
        return None
    _folder(folder, create=False)
    files = [folder / f"{name}.onnx", folder / f"{name}.safetensors", folder / PROVENANCE]
    for f in files:
        if f.is_symlink() or (f.exists() and not f.is_file()):
            raise CacheError(f, "is not a regular file; the model cache follows no links (pull again with --force)")
    return files[0] if all(f.is_file() for f in files) else None


def looks_like_path(value) -> bool:
    """Whether ``value`` names a file rather than a catalogue name."""
    text = os.fspath(value)
    return text.endswith(WEIGHT_SUFFIXES) or os.sep in text or "/" in text or os.path.exists(text)


def resolve(value, pull_missing: bool = False, progress: bool = True, log=None):
    """``value`` as a weight file: a path is returned as it is; a catalogue name becomes its cached
    ``NAME.onnx``, pulled first when ``pull_missing`` (interactive commands), else one line with the
    command that fetches it (``predict.py`` and grading never download)."""
    if value is None or looks_like_path(value):
        return value
    name = os.fspath(value)
    catalogue = cat.load_catalogue()
    if name not in catalogue.entries:
        raise WeightFileError(name, "is neither a weight file (.safetensors, .onnx) nor a model name; "
                                    f"named models: {', '.join(catalogue.entries)} (lightsaft-infer models)")
    found = cached(name)
    if found is not None:
        return os.fspath(found)
    if not pull_missing:
        raise WeightFileError(name, f"is not in the model cache ({model_dir(name)}); fetch it first with: "
                                    f"lightsaft-infer pull {name}")
    return os.fspath(pull(name, progress=progress, log=log))


# --- pulling ---------------------------------------------------------------------------------------------


def _lock(home: pathlib.Path, name: str, log):
    """An exclusive lock on ``locks/NAME.lock`` (waits for another pull of the same name)."""
    import fcntl

    locks = _folder(home / "locks", create=True)
    path = locks / f"{name}.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise CacheError(path, "is a symbolic link; the model cache follows none") from None
        raise CacheError(path, f"cannot be opened ({err.strerror or err}); set {HOME_ENV} to a writable folder") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log(f"{name}: another pull of this model is running; waiting for it")
        fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _clean_staging(models: pathlib.Path) -> None:
    """Remove staging folders of pulls that were killed (their process is gone)."""
    try:
        names = os.listdir(models)
    except OSError:
        return
    for entry in names:
        m = _STAGING.match(entry)
        if m and int(m["pid"]) != os.getpid() and not _alive(int(m["pid"])):
            shutil.rmtree(models / entry, ignore_errors=True)


def verify_file(path, ref: cat.FileRef) -> None:
    """Raise :class:`WeightFileError` unless ``path``'s bytes are the catalogue's file (size, then hash)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightFileError(path, "no such file (a regular file is needed)")
    problem = ref.integrity.check_size(os.path.getsize(path))
    if problem is None:
        with open(path, "rb") as f:
            from .download import what_it_is

            problem = what_it_is(f.read(1024))
    if problem is None:
        got = cat.file_digest(path, ref.integrity)
        if got != ref.integrity.digest:
            problem = f"has {ref.integrity.kind} {got}; the catalogue's {ref.path} has {ref.integrity.digest}"
    if problem:
        raise WeightFileError(path, f"is not the authors' file: {problem}")


def _download(entry, ref, urls, part: pathlib.Path, stall, progress, log) -> pathlib.Path:
    """Fetch ``ref`` into ``part`` from the first of ``urls`` that delivers the right bytes."""
    if part.is_symlink():
        raise CacheError(part, "is a symbolic link; the model cache follows none")
    if part.is_file():  # a finished download from an earlier run (conversion failed): check it, don't refetch
        try:
            verify_file(part, ref)
            return part
        except WeightFileError:
            # a shorter file of known size is a prefix to resume; anything else starts again
            if ref.integrity.size is None or part.stat().st_size >= ref.integrity.size:
                part.unlink()
    problems = []
    for i, url in enumerate(urls):
        more = "; trying the next source" if i + 1 < len(urls) else ""
        bar = _bar(progress, ref.integrity.size, f"{entry.name}: {os.path.basename(ref.path)}")
        try:
            fetch(url, os.fspath(part), ref.integrity.limit, stall, bar.update if bar else None, ref.integrity.size)
        except DownloadError as err:
            problems.append(str(err))
            if more:
                log(f"{entry.name}: {err}{more}")
            if not err.resumable and part.exists():
                part.unlink()
            continue
        except LightsaftError:  # the cache's disk (full, unwritable): no partial file stays behind
            if part.exists():
                part.unlink()
            raise
        finally:
            if bar:
                bar.close()
        try:
            verify_file(part, ref)
            return part
        except WeightFileError as err:
            part.unlink()  # wrong bytes are never kept
            problems.append(f"{url}: {err.problem}")
            if more:
                log(f"{entry.name}: {url}: {err.problem}{more}")
    raise LightsaftError(entry.name, f"no source delivered {ref.path}: " + " | ".join(problems[-3:]))


class _Bar:
    def __init__(self, total, desc):
        from tqdm import tqdm

        self.tqdm = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, leave=False)

    def update(self, done, total):
        self.tqdm.update(done - self.tqdm.n)

    def close(self):
        self.tqdm.close()


def _bar(progress, total, desc):
    return _Bar(total, desc) if progress else None


def _fetch_config(entry, config, checkpoint_file, downloads, mirror, hosts, stall, log) -> bytes:
    """The verified bytes of a v2-code entry's config.yaml: ``config`` if given, else the one beside a
    hand-fetched checkpoint, else downloaded."""
    ref = entry.config
    candidates = [config] if config else []
    if checkpoint_file and not config:
        from .hydra_config import find_config

        beside = find_config(checkpoint_file)
        candidates += [beside] if beside else []
    for path in candidates:
        verify_file(path, ref)  # a config given by hand must be the authors' too
        with open(path, "rb") as f:
            return f.read()
    part = downloads / f"{entry.name}-config-{ref.integrity.digest[:16]}.part"
    if part.exists():
        part.unlink()
    try:
        return _download(entry, ref, entry.urls(hosts, ref, mirror), part, stall, False, log).read_bytes()
    finally:
        if part.exists():
            part.unlink()


def pull(name: str, file=None, config=None, mirror: str | None = None, force: bool = False,
         progress: bool = True, log=None) -> pathlib.Path:
    """Make the catalogue's model ``name`` ready in the cache and return its ``NAME.onnx``.

    Downloads the checkpoint (or takes ``file``, fetched by hand), checks it against the catalogue before
    anything parses it, converts it without running its pickle, exports ONNX, and renames the finished
    folder into place. ``config``: a v2-code network's config.yaml fetched by hand (checked too).
    ``mirror``: a base URL serving ``<repository>/<commit>/<path>`` instead of the hosts.
    """
    from .backends import module_available

    log = log or (lambda line: None)
    catalogue = cat.load_catalogue()
    entry = catalogue.get(name)
    for module in ("torch", "onnx"):
        if not module_available(module):
            raise LightsaftError(None, f"pull converts and exports with {module}: pip install 'lightsaft-infer[torch]'")
    if mirror is not None and not mirror.lower().startswith(("http://", "https://")):
        raise LightsaftError(None, f"--mirror must be an http(s) base URL, not {mirror!r:.80}")
    stall = stall_seconds()
    home = _folder(cache_home(), create=True)
    models, downloads = _folder(home / "models", True), _folder(home / "downloads", True)
    fd = _lock(home, name, log)
    try:
        done = cached(name, home)
        if done is not None and not force:
            log(f"{name}: already in the cache ({done.parent})")
            return done
        _clean_staging(models)
        if file is not None:
            verify_file(file, entry.checkpoint)
            checkpoint, source = pathlib.Path(file), {"file": os.path.abspath(file)}
        else:
            part = downloads / f"{name}-{entry.checkpoint.integrity.digest[:16]}.part"
            urls = entry.urls(catalogue.hosts, entry.checkpoint, mirror)
            checkpoint = _download(entry, entry.checkpoint, urls, part, stall, progress, log)
            source = {"urls": urls}
        config_bytes = None
        if entry.config is not None:
            config_bytes = _fetch_config(entry, config, file, downloads, mirror, catalogue.hosts, stall, log)
        target = _store(entry, checkpoint, config_bytes, source, models, log)
        if file is None:
            checkpoint.unlink()
        return target
    finally:
        os.close(fd)


def _store(entry, checkpoint, config_bytes, source, models: pathlib.Path, log) -> pathlib.Path:
    """Convert, export and rename a finished model folder into ``models/NAME``."""
    from .checkpoint import convert_checkpoint
    from .export import export_onnx
    from .families import build_network
    from .shapes import check_shapes
    from .weights import save_weights

    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{entry.name}.{os.getpid()}.", suffix=".staging", dir=models))
    try:
        config_path = None
        if config_bytes is not None:
            config_path = staging / "config.yaml"
            config_path.write_bytes(config_bytes)
        config, tensors = convert_checkpoint(checkpoint, config_path)
        if config.family != entry.family:
            raise WeightFileError(checkpoint, f"converts to a {config.family} network; the catalogue says {entry.family}")
        check_shapes(config, tensors, checkpoint)
        build_network(config, tensors, checkpoint)  # the tensors fit the configuration
        weights = staging / f"{entry.name}.safetensors"
        save_weights(weights, config, tensors)
        export_onnx(weights, staging / f"{entry.name}.onnx")
        record = {
            "name": entry.name, "title": entry.title, "family": entry.family, "licence": entry.licence,
            "repository": entry.repository, "commit": entry.commit, "path": entry.checkpoint.path,
            "integrity": entry.checkpoint.integrity.describe(), **source,
            "config": None if entry.config is None else {"path": entry.config.path,
                                                         "integrity": entry.config.integrity.describe()},
            "parameters": int(sum(t.size for t in tensors.values())),
            "pulled": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }  # fmt: skip
        (staging / PROVENANCE).write_text(json.dumps(record, indent=2) + "\n")
        os.chmod(staging, 0o755)
        target = models / entry.name
        old = None
        if target.exists() or target.is_symlink():
            old = models / f".{entry.name}.{os.getpid()}.old.trash"
            os.rename(target, old)
        os.rename(staging, target)
        if old is not None and old.is_symlink():
            old.unlink()
        elif old is not None:
            shutil.rmtree(old, ignore_errors=True)
        log(f"{entry.name}: verified ({entry.checkpoint.integrity.kind}), converted and exported to {target}")
        return target / f"{entry.name}.onnx"
    except OSError as err:
        raise CacheError(getattr(err, "filename", None) or staging, write_problem(err, staging)) from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


# --- listing ---------------------------------------------------------------------------------------------


def provenance(name: str, home=None) -> dict | None:
    path = model_dir(name, home) / PROVENANCE
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


BENCH_RECORD = "bench.json"


def record_bench(weights, rtf: float, duration: float, cpu: str) -> None:
    """Remember a bench's exact-path RTF for a pulled model (shown by ``lightsaft-infer models``)."""
    weights = pathlib.Path(weights).absolute()
    folder = weights.parent
    if folder.parent != (cache_home() / "models") or not (folder / PROVENANCE).is_file():
        return
    tmp = folder / f".{BENCH_RECORD}.{os.getpid()}.part"
    tmp.write_text(json.dumps({"rtf": rtf, "duration": duration, "cpu": cpu}) + "\n")
    publish(os.fspath(tmp), folder / BENCH_RECORD)


def table() -> str:
    """The catalogue as a Markdown-style table: what ``lightsaft-infer models`` prints."""
    from . import cpu

    catalogue = cat.load_catalogue()
    here = cpu.describe()
    rows = [("name", "what", "parameters", "published MDX SDR (mean)", "download", "cached", "RTF here (exact)")]
    for entry in catalogue.entries.values():
        try:
            path = cached(entry.name)
        except CacheError:
            path = None
        record = provenance(entry.name) if path else None
        params = entry.parameters or (record or {}).get("parameters")
        size = entry.checkpoint.integrity.size
        rtf = "—"
        bench = model_dir(entry.name) / BENCH_RECORD
        if path and bench.is_file():
            try:
                b = json.loads(bench.read_text())
                rtf = f"{b['rtf']:.3f} ({b['duration']:g} s song)" + ("" if b.get("cpu") == here else " other CPU")
            except (OSError, ValueError, KeyError, TypeError):
                pass
        sdr = entry.published_mdx_sdr
        rows.append((entry.name, entry.title, f"{params:,}" if params else "—", f"{sdr['mean']:.3f}" if sdr else "—",
                     f"{size / 1e6:.0f} MB" if size else "≤ 100 MB", "yes" if path else "no", rtf))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + f"\n\ncache: {cache_home()}; pull one with: lightsaft-infer pull NAME"
