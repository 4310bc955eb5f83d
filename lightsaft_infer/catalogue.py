"""The authors' published networks by name: the catalogue (``catalogue.json``) and how bytes are checked.

Each entry says where the authors keep a checkpoint (repository, commit, path) and what its bytes
must be: a Git LFS object's SHA-256 and size, or a plain git blob's id (SHA-1 of ``blob <size>\\0``
followed by the content, what ``git hash-object`` prints). LaSAFT-Net-v2-code entries name their
Hydra ``config.yaml`` with its own blob id. Whatever server answers, the content decides.

``$LIGHTSAFT_CATALOGUE`` names another catalogue file of the same form (an institution's mirror of
other checkpoints, or the tests' loopback server).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re

from .configs import FAMILIES
from .errors import LightsaftError

FORMAT = "lightsaft-infer-catalogue"
CATALOGUE_ENV = "LIGHTSAFT_CATALOGUE"
BUILTIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "catalogue.json")
#: Integrity kinds and the length of their hex digest.
KINDS = {"lfs-sha256": 64, "git-blob-sha1": 40}
#: GitHub refuses plain blobs over 100 MiB (larger files go to LFS), so a blob entry is never larger.
MAX_BLOB_BYTES = 100 << 20
#: An authors' config.yaml is a few kB (the reader refuses more than 64 kB).
MAX_CONFIG_BYTES = 64 << 10
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_HEX = re.compile(r"^[0-9a-f]+$")
_SOURCES = ("vocals", "drums", "bass", "other")


@dataclasses.dataclass(frozen=True)
class Integrity:
    """What a file's bytes must be: ``kind`` (``lfs-sha256`` or ``git-blob-sha1``), its hex ``digest``, and
    ``size`` in bytes where the catalogue states it (LFS objects)."""

    kind: str
    digest: str
    size: int | None = None

    @property
    def limit(self) -> int:
        """The most bytes a server may send for this file."""
        return self.size if self.size is not None else MAX_BLOB_BYTES

    def hasher(self, size: int):
        """A hash object primed for a file of ``size`` bytes (a git blob id hashes its header first)."""
        if self.kind == "lfs-sha256":
            return hashlib.sha256()
        h = hashlib.sha1()
        h.update(b"blob %d\0" % size)
        return h

    def check_size(self, size: int) -> str | None:
        """Why a file of ``size`` bytes cannot be this one, or None."""
        if self.size is not None and size != self.size:
            return f"is {size:,} bytes; the catalogue's file is {self.size:,}"
        if size > self.limit:
            return f"is {size:,} bytes, more than any file of its kind ({self.limit:,})"
        return None

    def describe(self) -> str:
        return f"{self.kind} {self.digest}" + ("" if self.size is None else f", {self.size:,} bytes")


def file_digest(path, integrity: Integrity, block: int = 1 << 20) -> str:
    """The digest of the file at ``path`` in ``integrity``'s kind (SHA-256, or the git blob id)."""
    size = os.path.getsize(path)
    h = integrity.hasher(size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            h.update(chunk)
    return h.hexdigest()


def bytes_digest(data: bytes, integrity: Integrity) -> str:
    h = integrity.hasher(len(data))
    h.update(data)
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class FileRef:
    """A file in the authors' repository: ``path`` at the entry's commit, and what its bytes must be."""

    path: str
    integrity: Integrity


@dataclasses.dataclass(frozen=True)
class Entry:
    """One published network."""

    name: str
    title: str
    family: str
    configuration: str
    parameters: int | None
    published_mdx_sdr: dict | None
    licence: str
    repository: str
    commit: str
    ref: str
    checkpoint: FileRef
    config: FileRef | None = None
    mirrors: tuple = ()

    def urls(self, hosts: dict, ref: FileRef, mirror: str | None = None) -> list:
        """Where ``ref`` may be fetched, in the order to try: a ``mirror`` base alone (``MIRROR/<repository>/
        <commit>/<path>``), else the host for its kind, then the entry's second sources (checkpoint only)."""
        from urllib.parse import quote

        path = quote(ref.path, safe="/=")
        if mirror:
            return [f"{mirror.rstrip('/')}/{self.repository}/{self.commit}/{path}"]
        template = hosts["lfs" if ref.integrity.kind == "lfs-sha256" else "git-blob"]
        first = template.format(repository=self.repository, commit=self.commit, path=path)
        return [first] + (list(self.mirrors) if ref is self.checkpoint else [])


@dataclasses.dataclass(frozen=True)
class Catalogue:
    path: str
    hosts: dict
    entries: dict  # name -> Entry, in the file's order

    def get(self, name: str) -> Entry:
        if name not in self.entries:
            raise LightsaftError(None, f"no model named {name!r:.80} in the catalogue ({self.path}); "
                                       f"known: {', '.join(self.entries)}")
        return self.entries[name]


def load_catalogue(path=None) -> Catalogue:
    """The catalogue at ``path`` (default ``$LIGHTSAFT_CATALOGUE``, else the one shipped in the package),
    checked for form; one :class:`LightsaftError` line naming the file and the problem otherwise."""
    path = os.fspath(path or os.environ.get(CATALOGUE_ENV) or BUILTIN)
    try:
        with open(path, "rb") as f:
            raw = f.read((1 << 20) + 1)
        if len(raw) > 1 << 20:
            raise LightsaftError(path, "is over 1 MB; a catalogue is a few kB")
        data = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise LightsaftError(path, f"is not a readable catalogue ({' '.join(str(err).split())[:160]})") from None
    try:
        return _parse(data, path)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise LightsaftError(path, f"is not a valid catalogue: {' '.join(str(err).split())[:200]}") from None


def _integrity(d) -> Integrity:
    kind, digest, size = d["kind"], d["digest"], d.get("size")
    if kind not in KINDS:
        raise ValueError(f"integrity kind {kind!r:.40} is not one of {sorted(KINDS)}")
    if not isinstance(digest, str) or len(digest) != KINDS[kind] or not _HEX.match(digest):
        raise ValueError(f"a {kind} digest is {KINDS[kind]} lowercase hex digits, not {digest!r:.80}")
    if kind == "lfs-sha256" and (not isinstance(size, int) or isinstance(size, bool) or not 0 < size < 1 << 40):
        raise ValueError(f"an LFS object needs its size in bytes, not {size!r:.40}")
    if kind == "git-blob-sha1" and size is not None:
        raise ValueError("a git blob entry carries no size (its id covers it)")
    return Integrity(kind, digest, size)


def _file(d) -> FileRef:
    path = d["path"]
    if not isinstance(path, str) or not path or path.startswith("/") or ".." in path.split("/") or "\\" in path:
        raise ValueError(f"a file path inside the repository is needed, not {path!r:.80}")
    return FileRef(path, _integrity(d["integrity"]))


def _parse(data, path) -> Catalogue:
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("format_version") != 1:
        raise ValueError(f"'format' must be {FORMAT!r} and 'format_version' 1")
    hosts = data["hosts"]
    for kind in ("lfs", "git-blob"):
        url = hosts[kind]
        if not isinstance(url, str) or not url.startswith(("https://", "http://")) or "{path}" not in url:
            raise ValueError(f"host {kind!r} must be an http(s) URL template with {{path}}")
    entries = {}
    for d in data["models"]:
        name = d["name"]
        if not isinstance(name, str) or not _NAME.match(name) or name in entries:
            raise ValueError(f"model name {name!r:.80} is not a unique lowercase name")
        if d["family"] not in FAMILIES:
            raise ValueError(f"{name}: family {d['family']!r:.40} is not one of {sorted(FAMILIES)}")
        checkpoint = _file(d)
        config = _file(d["config"]) if d.get("config") is not None else None
        if (d["family"] == "lasaft-v2") != (config is not None):
            raise ValueError(f"{name}: a lasaft-v2 entry names its config.yaml, and only it")
        if config is not None and config.integrity.kind != "git-blob-sha1":
            raise ValueError(f"{name}: a config.yaml is a git blob")
        sdr = d.get("published_mdx_sdr")
        if sdr is not None and not all(isinstance(sdr.get(k), (int, float)) for k in (*_SOURCES, "mean")):
            raise ValueError(f"{name}: published_mdx_sdr needs vocals, drums, bass, other and mean")
        params = d.get("parameters")
        if params is not None and (not isinstance(params, int) or params <= 0):
            raise ValueError(f"{name}: parameters must be a positive count")
        repo, commit = d["repository"], d["commit"]
        if not isinstance(repo, str) or not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
            raise ValueError(f"{name}: repository must be owner/name")
        if not isinstance(commit, str) or not re.fullmatch(r"[0-9a-f]{40}", commit):
            raise ValueError(f"{name}: commit must be 40 hex digits")
        mirrors = tuple(d.get("mirrors", ()))
        if not all(isinstance(u, str) and u.startswith(("https://", "http://")) for u in mirrors):
            raise ValueError(f"{name}: mirrors are http(s) URLs")
        entries[name] = Entry(name, str(d["title"]), d["family"], str(d["configuration"]), params, sdr,
                              str(d["licence"]), repo, commit, str(d.get("ref", "")), checkpoint, config, mirrors)
    if not entries:
        raise ValueError("it lists no models")
    return Catalogue(path, dict(hosts), entries)
